"""Tests for surrogate.py: the written-out GP posterior against direct computations and
scikit-learn, the latent std, the kriging believer update."""

import math

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

import surrogate


def test_latent_std_is_the_predictive_std_without_the_fitted_noise():
    rng = np.random.default_rng(0)
    points = rng.dirichlet(np.ones(3), 15)
    values = 100 * (np.sin(4 * points[:, 0]) + 0.3 * rng.standard_normal(15)) + 7  # far from unit scale
    gp = surrogate.fit_gp(points, values)
    assert gp.kernel_.k2.noise_level > 0.05  # noise was fitted
    queries = np.vstack([points[:3], rng.dirichlet(np.ones(3), 30)])
    latent_std = surrogate.posterior(gp, values).latent_std(queries)
    _, predictive_std = gp.predict(queries, return_std=True)
    assert np.all(latent_std < predictive_std)
    # Reference: the GP posterior of the signal kernel alone, by hand, in the units of the values.
    train_cov = gp.kernel_(points) + gp.alpha * np.eye(len(points))
    cross_cov = gp.kernel_.k1(queries, points)  # (M, N)
    latent_var = np.diag(gp.kernel_.k1(queries)) - np.sum(
        cross_cov * np.linalg.solve(train_cov, cross_cov.T).T, axis=1
    )
    np.testing.assert_allclose(latent_std, np.sqrt(latent_var) * np.std(values), rtol=1e-6)


def matern52(a, b, length_scales):
    """Matern, nu = 5/2, written out: (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r), r = |(a - b) / l|."""
    r = np.sqrt((((a[:, None, :] - b[None, :, :]) / length_scales) ** 2).sum(-1))  # (M, N)
    return (1 + math.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-math.sqrt(5) * r)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_posterior_is_the_gp_posterior_computed_directly(noise):
    """mu = m + s k(x, X) K^-1 y, var_f = s^2 (k(x, x) - k(x, X) K^-1 k(X, x)), K = k(X, X) + (n + jitter) I,
    y the values normalised by their mean m and std s: the noise-free kernel (n = 0) and a noisy one."""
    rng = np.random.default_rng(3)
    points, queries = rng.dirichlet(np.ones(3), 6), rng.dirichlet(np.ones(3), 10)
    values = 4 * points[:, 0] - points[:, 1] ** 2 + 0.2 * rng.standard_normal(6) + 3
    scale, length_scales = 1.7, np.array([0.4, 0.9, 0.6])
    kernel = ConstantKernel(scale) * Matern(length_scales, nu=2.5)
    if noise:
        kernel = WhiteKernel(noise) + kernel  # the noise first: found by its type, not its place
    gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None).fit(points, values)
    found = surrogate.posterior(gp, values)
    m, s = values.mean(), values.std()
    y = (values - m) / s
    train = scale * matern52(points, points, length_scales) + (noise + gp.alpha) * np.eye(6)  # (N, N)
    cross = scale * matern52(queries, points, length_scales)  # (M, N)
    mean = m + s * cross @ np.linalg.solve(train, y)
    latent_var = s**2 * (scale - np.sum(cross * np.linalg.solve(train, cross.T).T, axis=1))
    np.testing.assert_allclose(found.mean(queries), mean, rtol=1e-9)
    np.testing.assert_allclose(found.latent_std(queries), np.sqrt(latent_var), rtol=1e-6)
    assert surrogate.signal_and_noise(gp.kernel_)[1] == noise


def test_believer_conditioning_keeps_the_mean_and_shrinks_the_variance_to_the_noise():
    rng = np.random.default_rng(2)
    points = rng.dirichlet(np.ones(3), 8)
    values = 5 * np.sin(3 * points[:, 0]) + 0.5 * rng.standard_normal(8) + 10
    gp = surrogate.fit_gp(points, values)
    fitted = surrogate.posterior(gp, values)
    new, queries = rng.dirichlet(np.ones(3), 1), rng.dirichlet(np.ones(3), 20)
    believed = fitted.believe(new)
    np.testing.assert_allclose(believed.mean(queries), gp.predict(queries), rtol=1e-9)
    assert believed.kernel == gp.kernel_ and len(fitted.points) == 8  # fixed hyperparameters, fit intact
    # Hand: one observation of noise variance n at a point of latent variance v leaves v n / (v + n).
    noise = gp.kernel_.k2.noise_level * np.std(values) ** 2
    variance = fitted.latent_std(new)[0] ** 2
    shrunk = believed.latent_std(new)[0] ** 2
    assert shrunk == pytest.approx(variance * noise / (variance + noise), rel=1e-6) and shrunk < noise
    # Reference: sklearn's own fit with the kernel fixed, on the normalised values plus the fantasy.
    y_mean, y_std = np.mean(values), np.std(values)
    fantasy = (gp.predict(new) - y_mean) / y_std
    reference = GaussianProcessRegressor(gp.kernel_, optimizer=None).fit(
        np.vstack([points, new]), np.concatenate([(values - y_mean) / y_std, fantasy])
    )
    mu, std = reference.predict(queries, return_std=True)  # std of a noisy observation: the noise is in it
    latent_std = np.sqrt(std**2 - gp.kernel_.k2.noise_level) * y_std
    np.testing.assert_allclose(believed.mean(queries), mu * y_std + y_mean, rtol=1e-9)
    np.testing.assert_allclose(believed.latent_std(queries), latent_std, rtol=1e-6)
