"""The Gaussian-process surrogate of J(w) that bayes_opt.py asks: a fit
by scikit-learn, and the posterior written out from its public parts, so
that the acquisition sees the latent variance and the batch can condition
on fantasy observations (the kriging believer) without refitting.

    J ~ GP(c Matern_5/2(w, w') + white noise), normalize_y=True
    mu(x), var_f(x)   Rasmussen & Williams 2006, Algorithm 2.1
    believe(new)      exact conditioning on y = mu(new), kernel fixed
                      (Ginsbourger, Le Riche & Carraro 2010)
"""

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, Sum, WhiteKernel
from threadpoolctl import threadpool_limits


def fit_gp(points, values, n_restarts=2, random_state=0):
    """GP regression of values (N,) on points (N, K):

        k = ConstantKernel x Matern(nu = 5/2, a length scale per
            weight) + WhiteKernel

    normalize_y=True, hyperparameters by restarted ML-II. The bounds,
    in units of the normalised values, keep ML-II sane on a handful of
    noisy points: length scales in [0.2, 2] (the simplex is sqrt(2)
    across: shorter is not resolved, longer is linear), noise >= 1%
    of the variance (every evaluation is noisy: no interpolating),
    signal >= 30% (the GP may not call it all noise and stop).
    """
    K = points.shape[1]
    scales = np.full(K, 0.5)
    matern = Matern(length_scale=scales, length_scale_bounds=(0.2, 2.0), nu=2.5)
    signal = ConstantKernel(1.0, (0.3, 10.0)) * matern
    noise = WhiteKernel(noise_level=0.1, noise_level_bounds=(1e-2, 1.0))
    restarts = dict(n_restarts_optimizer=n_restarts, random_state=random_state)
    gp = GaussianProcessRegressor(signal + noise, normalize_y=True, **restarts)
    # One BLAS thread: on matrices this small, more threads only
    # contend (10x slower on busy cores).
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        # a hyperparameter at its bound is fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gp.fit(points, values)


def signal_and_noise(kernel):
    """A fitted kernel's signal part and its white-noise variance
    (0 without a WhiteKernel term)."""
    if isinstance(kernel, Sum):
        for signal, noise in ((kernel.k1, kernel.k2), (kernel.k2, kernel.k1)):
            if isinstance(noise, WhiteKernel):
                return signal, noise.noise_level
    return kernel, 0.0


@dataclass
class Posterior:
    """The GP posterior of J, written out (Rasmussen & Williams 2006,
    Alg. 2.1) from a fitted GaussianProcessRegressor's public parts.
    In normalised units y = (J - J_mean) / J_std (normalize_y), k the
    fitted kernel (signal + white noise), X the N observed points:

        C        = k(X, X) + jitter I
        L        = chol(C),  alpha = C^-1 y                 (N,)
        mu(x)    = J_mean + J_std k(x, X) alpha             the mean
        var_f(x) = J_std^2 (k_signal(x, x) - v^T v),
        v        = L^-1 k(X, x)                  the latent variance

    var_f leaves out the observation noise: EI asks how much J
    itself may improve, not one noisy draw.
    """

    kernel: object
    """the fitted kernel k (sklearn Kernel), signal + white noise"""
    jitter: float
    """the regressor's alpha, added to the diagonal of k(X, X)"""
    points: np.ndarray
    """X (N, K), the observed weights (and believed ones)"""
    values: np.ndarray
    """y (N,), their normalised values"""
    value_mean: float
    """J_mean, of the observed values"""
    value_std: float
    """J_std, of the observed values (1 where they are all equal)"""
    cholesky: np.ndarray
    """L (N, N), lower"""
    weights: np.ndarray
    """alpha (N,)"""

    def mean(self, points):
        """mu(x) at points (M, K) -> (M,)."""
        # (M, N) k(x, X): the white noise is 0 off the diagonal
        cross = self.kernel(points, self.points)
        return self.value_std * (cross @ self.weights) + self.value_mean

    def latent_std(self, points):
        """sqrt(var_f(x)) at points (M, K) -> (M,), floored at 1e-6 J_std."""
        signal, _ = signal_and_noise(self.kernel)
        cross = self.kernel(points, self.points)  # (M, N)
        L = self.cholesky  # (N, N)
        v = solve_triangular(L, cross.T, lower=True)  # (N, M)
        explained = np.einsum("ij,ij->j", v, v)  # (M,) v^T v
        latent_var = signal.diag(points) - explained  # (M,)
        floored = np.maximum(latent_var, 1e-12)
        return self.value_std * np.sqrt(floored)

    def believe(self, new_points):
        """The kriging believer update (Ginsbourger et al. 2010): the
        posterior with fantasy observations y = mu(new_points) (M, K)
        added, its kernel and normalisation unchanged.

        Hyperparameters stay fixed: a fantasy carries no evidence
        about them (ML-II refitted on the GP's own predictions would
        pull the noise down), and a refit per batch point would cost
        a restarted ML-II each. With the kernel fixed this is exact
        conditioning on X' = [X; new], y' = [y; mu(new)]: the mean is
        unchanged everywhere; only the variance shrinks, at a single
        new point from v to v n / (v + n) < n (n the noise variance).
        """
        points = np.vstack([self.points, new_points])  # (N + M, K)
        cross = self.kernel(new_points, self.points)  # (M, N)
        believed = cross @ self.weights  # (M,) mu(new), normalised
        values = np.concatenate([self.values, believed])  # (N + M,)
        jitter = self.jitter * np.eye(len(points))
        train_cov = self.kernel(points) + jitter  # (N + M, N + M)
        lower = cholesky(train_cov, lower=True)
        weights = cho_solve((lower, True), values)  # (N + M,)
        return replace(self, points=points, values=values, cholesky=lower, weights=weights)


def posterior(gp, values) -> Posterior:
    """The Posterior of a GaussianProcessRegressor fitted
    (normalize_y=True) on `values` (N,)."""
    value_mean, value_std = np.mean(values), np.std(values)
    if value_std < 10 * np.finfo(float).eps:  # all equal: sklearn divides by 1
        value_std = 1.0
    data = (gp.X_train_, gp.y_train_, value_mean, value_std)
    return Posterior(gp.kernel_, gp.alpha, *data, gp.L_, gp.alpha_)
