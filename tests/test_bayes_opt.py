"""Tests for bayes_opt.py: EI and log-EI against references, the latent std, the simplex, the log."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize

import bayes_opt
from bayes_opt import BayesOpt

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("sparse", "attention", "shap")


def bump(weights):
    """A smooth objective with its maximum 0 at (0.7, 0.3, 0), on an edge of the simplex."""
    return -((weights["sparse"] - 0.7) ** 2 + (weights["attention"] - 0.3) ** 2 + weights["shap"] ** 2)


# ---- Expected improvement ----


@pytest.mark.parametrize(
    "mu, sigma, f_best, xi", [(0.3, 0.7, 0.5, 0.05), (1.2, 0.4, 1.0, 0.0), (-0.5, 2.0, 0.8, 0.1)]
)
def test_expected_improvement_matches_monte_carlo(mu, sigma, f_best, xi):
    samples = np.random.default_rng(0).normal(mu, sigma, 4_000_000)
    monte_carlo = np.mean(np.maximum(samples - f_best - xi, 0.0))
    assert bayes_opt.expected_improvement(mu, sigma, f_best, xi) == pytest.approx(monte_carlo, rel=0.01)


def test_log_ei_equals_log_of_ei_where_ei_is_representable():
    sigma, f_best, xi = 0.3, 1.0, 0.02
    mu = f_best + xi + sigma * np.linspace(-20, 8, 2001)  # z from -20 to 8, across all branches
    log_ei = bayes_opt.log_expected_improvement(mu, sigma, f_best, xi)
    np.testing.assert_allclose(
        log_ei, np.log(bayes_opt.expected_improvement(mu, sigma, f_best, xi)), rtol=1e-10, atol=1e-10
    )


def test_log_ei_is_finite_exact_and_monotone_where_ei_underflows():
    sigma = 0.5
    assert bayes_opt.expected_improvement(-40 * sigma, sigma, 0.0) == 0.0  # EI underflows at z = -40
    # Mills-ratio series: h(z) = phi(z) / z^2 (1 - 3/z^2 + 15/z^4 - 105/z^6 + ...)
    z = np.array([-40.0, -300.0, -1e3 * (1 + 1e-9), -1e5, -1e9])
    series = (
        -(z**2) / 2
        - 0.5 * math.log(2 * math.pi)
        - 2 * np.log(-z)
        + np.log(1 - 3 / z**2 + 15 / z**4 - 105 / z**6)
    )
    np.testing.assert_allclose(bayes_opt.log_h(z), series, rtol=1e-14, atol=1e-9)
    z = np.concatenate([-np.logspace(12, 0.01, 3000), np.linspace(-1, 10, 500)])
    log_ei = bayes_opt.log_expected_improvement(z * sigma, sigma, 0.0)
    assert np.all(np.isfinite(log_ei)) and np.all(np.diff(log_ei) > 0)


# ---- The GP surrogate ----


def test_latent_std_is_the_predictive_std_without_the_fitted_noise():
    rng = np.random.default_rng(0)
    points = rng.dirichlet(np.ones(3), 15)
    values = 100 * (np.sin(4 * points[:, 0]) + 0.3 * rng.standard_normal(15)) + 7  # far from unit scale
    gp = bayes_opt.fit_gp(points, values)
    assert gp.kernel_.k2.noise_level > 0.05  # noise was fitted
    queries = np.vstack([points[:3], rng.dirichlet(np.ones(3), 30)])
    _, latent_std = bayes_opt.latent_posterior(gp, queries)
    _, predictive_std = gp.predict(queries, return_std=True)
    assert np.all(latent_std < predictive_std)
    # Reference: the GP posterior of the signal kernel alone, by hand, in the units of the values.
    train_cov = gp.kernel_(points) + gp.alpha * np.eye(len(points))
    cross_cov = gp.kernel_.k1(queries, points)  # (M, N)
    latent_var = np.diag(gp.kernel_.k1(queries)) - np.sum(
        cross_cov * np.linalg.solve(train_cov, cross_cov.T).T, axis=1
    )
    np.testing.assert_allclose(latent_std, np.sqrt(latent_var) * np.std(values), rtol=1e-6)


def test_duplicate_points_and_constant_values_fit_and_use_the_posterior_mean():
    constant = BayesOpt(NAMES, seed=0)
    for _ in range(6):
        constant.tell({"sparse": 1 / 3, "attention": 1 / 3, "shap": 1 / 3}, 2.0)
    weights = constant.ask()
    assert min(weights.values()) >= 0 and sum(weights.values()) == pytest.approx(1, abs=1e-12)
    assert constant.best()[1] == pytest.approx(2.0)
    duplicates = BayesOpt(NAMES, seed=0)
    for value in (0.0, 1.0, 0.0, 1.0, 0.5, 0.5):
        duplicates.tell({"sparse": 0.5, "attention": 0.5, "shap": 0.0}, value)
    duplicates.ask()
    assert duplicates.best()[1] == pytest.approx(0.5, abs=0.05)  # the noisy incumbent, not max raw 1.0


# ---- Candidates and suggestions on the simplex ----


def test_projection_onto_the_simplex_is_the_nearest_simplex_point():
    hand = np.array([[0.5, 0.5, 0.5], [2.0, 0.0, 0.0], [0.6, 0.6, -1.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(
        bayes_opt.project_to_simplex(hand),
        [[1 / 3, 1 / 3, 1 / 3], [1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]],
        atol=1e-12,
    )
    points = np.random.default_rng(1).normal(0.2, 0.5, (5, 4))
    for point, projected in zip(points, bayes_opt.project_to_simplex(points)):
        reference = minimize(
            lambda w, point=point: np.sum((w - point) ** 2),
            np.full(4, 0.25),
            method="SLSQP",
            bounds=[(0, 1)] * 4,
            constraints={"type": "eq", "fun": lambda w: w.sum() - 1},
            options={"ftol": 1e-12},
        ).x
        np.testing.assert_allclose(projected, reference, atol=1e-5)


def test_every_asked_point_is_on_the_simplex_and_the_optimum_is_found():
    optimizer = BayesOpt(NAMES, seed=0)
    for _ in range(12):
        weights = optimizer.ask()
        assert tuple(weights) == NAMES
        assert min(weights.values()) >= 0 and sum(weights.values()) == pytest.approx(1, abs=1e-12)
        optimizer.tell(weights, bump(weights))
    assert optimizer.trials[0]["weights"] == {name: 1 / 3 for name in NAMES}  # initial design: centroid
    best_weights, best_value = optimizer.best()
    assert -bump(best_weights) < 0.005 and best_value == pytest.approx(bump(best_weights), abs=0.005)


def test_tell_rejects_weights_off_the_simplex_and_non_finite_values(tmp_path):
    log_path = tmp_path / "bo.jsonl"
    optimizer = BayesOpt(NAMES, log_path=str(log_path))
    with pytest.raises(ValueError, match="sum to 1.1"):
        optimizer.tell({"sparse": 0.5, "attention": 0.6, "shap": 0.0}, 1.0)
    with pytest.raises(ValueError, match="'attention': -0.2"):
        optimizer.tell({"sparse": 0.7, "attention": -0.2, "shap": 0.5}, 1.0)
    with pytest.raises(ValueError, match="lime"):
        optimizer.tell({"sparse": 0.5, "attention": 0.5, "lime": 0.0}, 1.0)
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            optimizer.tell({"sparse": 0.5, "attention": 0.5, "shap": 0.0}, value)
    with pytest.raises(ValueError, match="n_initial"):
        BayesOpt(NAMES, n_initial=0)
    assert optimizer.trials == [] and not log_path.exists()


# ---- The trial log ----


def test_resume_from_the_log_asks_what_the_uninterrupted_run_asks(tmp_path):
    log_path = str(tmp_path / "bo.jsonl")
    uninterrupted, logged = BayesOpt(NAMES, seed=3), BayesOpt(NAMES, log_path=log_path, seed=3)
    for step in range(6):
        weights = uninterrupted.ask()
        assert logged.ask() == weights
        value = bump(weights) + 0.01 * math.sin(7 * step)
        info = {"step": step, "kl": np.float32(0.25)}  # a numpy scalar is logged as a float
        uninterrupted.tell(weights, value, info=info)
        logged.tell(weights, value, info=info)
    assert (
        logged.trials[-1]["info"] == {"step": 5, "kl": 0.25}
        and type(logged.trials[-1]["info"]["kl"]) is float
    )
    with open(log_path) as log:
        assert [json.loads(line) for line in log] == uninterrupted.trials
    resumed = BayesOpt(NAMES, log_path=log_path, seed=3)
    assert resumed.trials == uninterrupted.trials
    assert resumed.ask() == uninterrupted.ask() and resumed.best() == uninterrupted.best()

    with open(log_path, "a") as log:  # a crash in the middle of the seventh write
        log.write('{"trial": 6, "weights": {"sparse": 0.2, "atten')
    with pytest.warns(UserWarning, match="unfinished last line"):
        after_crash = BayesOpt(NAMES, log_path=log_path, seed=3)
    assert after_crash.trials == uninterrupted.trials and after_crash.ask() == uninterrupted.ask()
    after_crash.tell(after_crash.ask(), 0.0)
    with open(log_path) as log:
        assert [json.loads(line)["trial"] for line in log] == list(range(7))

    with pytest.raises(ValueError, match="over weights"):  # a log of other weights
        BayesOpt(("sparse", "lime", "shap"), log_path=log_path)
    with open(log_path) as log:
        lines = log.readlines()
    lines[2] = lines[2][:20] + "\n"  # damage inside the file is not a crash mid-write
    with open(log_path, "w") as log:
        log.writelines(lines)
    with pytest.raises(ValueError, match="line 3"):
        BayesOpt(NAMES, log_path=log_path, seed=3)


# ---- The project's module, not PyPI's `bayesian-optimization` (which also imports as bayes_opt) ----


def test_the_project_module_is_imported_even_with_pypi_bayes_opt_on_the_path(tmp_path):
    assert bayes_opt.__file__ == os.path.join(REPO_ROOT, "bayes_opt.py")
    site = tmp_path / "site-packages"
    (site / "bayes_opt").mkdir(parents=True)
    (site / "bayes_opt" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(site)}  # like an installed package: after the script's dir
    command = [sys.executable, "-c", "import bayes_opt; print(bayes_opt.__file__)"]
    from_repo = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    assert from_repo.stdout.strip() == os.path.join(REPO_ROOT, "bayes_opt.py")
    elsewhere = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert elsewhere.stdout.strip() == str(site / "bayes_opt" / "__init__.py")  # the fake can shadow
