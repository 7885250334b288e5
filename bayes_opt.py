"""Bayesian optimisation of the shaping weights on the probability simplex.

The outer loop of Koo et al. 2025 ("Learning Explainable Dense Reward Shapes via Bayesian
Optimization", arXiv 2504.16272): one evaluation J(w) is a whole PPO run with shaping weights
w (w_k >= 0, sum_k w_k = 1), so there are few, noisy values and it pays to choose w carefully.

    surrogate    J ~ GP(c * Matern_5/2(w, w'; one length scale per weight) + white noise)
    incumbent    f_best = max_i mu(w_i) over the observed points      (noisy incumbent)
    acquisition  EI(w) = E[max(f(w) - f_best - xi, 0)]                 (Jones et al. 1998)
                       = sigma (z Phi(z) + phi(z)),  z = (mu - f_best - xi) / sigma
    next w       argmax of log EI over simplex candidates             (Ament et al. 2023, LogEI)
    batch of n   kriging believer (Ginsbourger, Le Riche & Carraro 2010, "Kriging is well-suited
                 to parallelize optimization"): after choosing w_j, condition the GP on the fantasy
                 observation y_j = mu(w_j), hyperparameters fixed, and choose w_{j+1} the same way

    opt = BayesOpt(("sparse", "attention", "shap", "lime"), log_path="runs/bo.jsonl")
    for _ in range(n_trials):
        weights = opt.ask()
        opt.tell(weights, J(weights))
    for _ in range(n_batches):            # or n parallel evaluations per round
        batch = opt.ask(n)
        for weights, value in zip(batch, evaluate_in_parallel(batch)):
            opt.tell(weights, value)
    best_weights, best_value = opt.best()
"""

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.special import erfcx
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, Sum, WhiteKernel
from threadpoolctl import threadpool_limits

SIMPLEX_TOLERANCE = 1e-6
FAR_TAIL = -1e3  # below this z, log EI comes from its asymptotic series
LOCAL_STEP_SIZES = (0.02, 0.05, 0.1, 0.2)  # sd of the Gaussian steps around the incumbent


# ---- Expected improvement and its logarithm ----


def expected_improvement(mu, sigma, f_best, xi=0.0):
    """Closed-form EI for maximisation (Jones et al. 1998), E[max(f - f_best - xi, 0)] for
    f ~ N(mu, sigma^2):  EI = (mu - f_best - xi) Phi(z) + sigma phi(z),  z = (mu - f_best - xi) / sigma."""
    improvement = np.asarray(mu, dtype=float) - f_best - xi
    z = improvement / sigma
    return improvement * norm.cdf(z) + sigma * norm.pdf(z)


def log_h(z):
    """log h(z), h(z) = phi(z) + z Phi(z), finite for every z (Ament et al. 2023, LogEI).

    For z <= -1 write Phi(z) = erfcx(-z / sqrt 2) exp(-z^2 / 2) / 2, so
        log h(z) = -z^2/2 - log(2 pi)/2 + log(1 - |z| erfcx(-z / sqrt 2) sqrt(pi / 2)).
    The bracket is ~1/z^2 and loses eps z^2 of its relative precision to cancellation, so below
    z = FAR_TAIL use the Mills-ratio series h(z) = phi(z) / z^2 (1 - 3 / z^2 + O(z^-4)) instead."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    direct, far = z > -1, z <= FAR_TAIL
    tail = ~direct & ~far
    out[direct] = np.log(norm.pdf(z[direct]) + z[direct] * norm.cdf(z[direct]))
    zt, zf = z[tail], z[far]
    log_ratio = np.log(-zt * erfcx(-zt / math.sqrt(2))) + 0.5 * math.log(math.pi / 2)  # < 0
    log1mexp = np.where(
        log_ratio > -math.log(2), np.log(-np.expm1(log_ratio)), np.log1p(-np.exp(log_ratio))
    )  # log(1 - e^x), stable on both sides
    out[tail] = -(zt**2) / 2 - 0.5 * math.log(2 * math.pi) + log1mexp
    out[far] = -(zf**2) / 2 - 0.5 * math.log(2 * math.pi) - 2 * np.log(-zf) + np.log1p(-3 / zf**2)
    return out


def log_expected_improvement(mu, sigma, f_best, xi=0.0):
    """log EI = log sigma + log h(z), z = (mu - f_best - xi) / sigma: ranks candidates even where
    EI underflows to 0 (Ament et al. 2023, "Unexpected Improvements to Expected Improvement")."""
    z = (np.asarray(mu, dtype=float) - f_best - xi) / sigma
    return np.log(sigma) + log_h(z)


# ---- The GP surrogate ----


def fit_gp(points, values, n_restarts=2, random_state=0):
    """GP regression of values (N,) on points (N, K): ConstantKernel x Matern(nu=2.5, one length
    scale per weight) + WhiteKernel, normalize_y=True, hyperparameters by restarted ML-II.

    The bounds (in units of the normalised values) keep ML-II sane on a handful of noisy points:
    length scales in [0.2, 2] (the simplex is sqrt(2) across: shorter cannot be resolved, longer is
    linear), noise >= 1% of the variance (every evaluation is noisy: no interpolating), signal
    >= 30% of it (the GP may not call everything noise and stop exploring)."""
    num_weights = points.shape[1]
    kernel = ConstantKernel(1.0, (0.3, 10.0)) * Matern(
        length_scale=np.full(num_weights, 0.5), length_scale_bounds=(0.2, 2.0), nu=2.5
    ) + WhiteKernel(noise_level=0.1, noise_level_bounds=(1e-2, 1.0))
    gp = GaussianProcessRegressor(
        kernel, normalize_y=True, n_restarts_optimizer=n_restarts, random_state=random_state
    )
    # One BLAS thread: on matrices this small, extra threads only contend (10x slower on busy cores).
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a hyperparameter at its bound is fine
        return gp.fit(points, values)


def signal_and_noise(kernel):
    """A fitted kernel's signal part and its white-noise variance (0 where it has no WhiteKernel term)."""
    if isinstance(kernel, Sum):
        for signal, noise in ((kernel.k1, kernel.k2), (kernel.k2, kernel.k1)):
            if isinstance(noise, WhiteKernel):
                return signal, noise.noise_level
    return kernel, 0.0


@dataclass
class Posterior:
    """The GP posterior of J, written out (Rasmussen & Williams 2006, Alg. 2.1), from a fitted
    GaussianProcessRegressor's public parts. In normalised units y = (J - J_mean) / J_std (normalize_y),
    with k the fitted kernel (signal + white noise) and X the N observed points:

        L = chol(k(X, X) + jitter I),   alpha = (k(X, X) + jitter I)^-1 y                (N,)
        mu(x)    = J_mean + J_std k(x, X) alpha                                the posterior mean of J
        var_f(x) = J_std^2 (k_signal(x, x) - v^T v),   v = L^-1 k(X, x)        the latent variance of J

    var_f leaves out the observation noise: EI asks how much J itself may improve, not one noisy draw.
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
        cross = self.kernel(points, self.points)  # (M, N) k(x, X): the white noise is 0 off the diagonal
        return self.value_std * (cross @ self.weights) + self.value_mean

    def latent_std(self, points):
        """sqrt(var_f(x)) at points (M, K) -> (M,), floored at 1e-6 J_std."""
        signal, _ = signal_and_noise(self.kernel)
        cross = self.kernel(points, self.points)  # (M, N)
        v = solve_triangular(self.cholesky, cross.T, lower=True)  # (N, M) L^-1 k(X, x)
        latent_var = signal.diag(points) - np.einsum("ij,ij->j", v, v)  # (M,) normalised
        return self.value_std * np.sqrt(np.maximum(latent_var, 1e-12))

    def believe(self, new_points):
        """The posterior with fantasy observations y = mu(new_points) (M, K) added to its data, its
        kernel and value normalisation unchanged: the kriging believer update (Ginsbourger et al. 2010).

        Hyperparameters stay fixed, not refitted: a fantasy carries no evidence about them; ML-II
        refitted on values the GP itself predicted would see points that agree perfectly with the model
        (pulling the fitted noise down), and each batch point would cost another restarted ML-II fit.
        With the kernel fixed the update is exact GP conditioning on X' = [X; new], y' = [y; mu(new)]:
        as y' agrees with the posterior mean, the mean is unchanged everywhere; only the variance
        shrinks, at a single new point from v to v n / (v + n) < n (n the noise variance)."""
        points = np.vstack([self.points, new_points])  # (N + M, K)
        believed = self.kernel(new_points, self.points) @ self.weights  # (M,) mu(new), normalised
        values = np.concatenate([self.values, believed])  # (N + M,)
        train_cov = self.kernel(points) + self.jitter * np.eye(len(points))  # (N + M, N + M)
        lower = cholesky(train_cov, lower=True)
        weights = cho_solve((lower, True), values)  # (N + M,)
        return replace(self, points=points, values=values, cholesky=lower, weights=weights)


def posterior(gp, values) -> Posterior:
    """The Posterior of a GaussianProcessRegressor fitted (normalize_y=True) on `values` (N,)."""
    value_mean, value_std = np.mean(values), np.std(values)
    if value_std < 10 * np.finfo(float).eps:  # all equal: sklearn divides by 1
        value_std = 1.0
    return Posterior(gp.kernel_, gp.alpha, gp.X_train_, gp.y_train_, value_mean, value_std, gp.L_, gp.alpha_)


# ---- Candidates on the simplex ----


def project_to_simplex(points):
    """Euclidean projection of each row of points (M, K) onto {w : w >= 0, sum w = 1}
    (Duchi et al. 2008, "Efficient projections onto the l1-ball"): w = max(p - theta, 0)."""
    descending = -np.sort(-points, axis=1)
    excess = np.cumsum(descending, axis=1) - 1  # (M, K)
    num_positive = np.sum(descending - excess / np.arange(1, points.shape[1] + 1) > 0, axis=1)
    theta = excess[np.arange(len(points)), num_positive - 1] / num_positive  # (M,)
    return np.maximum(points - theta[:, None], 0.0)


def simplex_candidates(incumbent, rng, n_random, n_local):
    """Dirichlet(1) samples, the K vertices, the centroid and Gaussian steps around the incumbent
    projected back onto the simplex (so edges and faces are reachable) -> (n_random + K + 1 + n_local, K)."""
    num_weights = len(incumbent)
    step_sizes = rng.choice(LOCAL_STEP_SIZES, size=(n_local, 1))
    local = project_to_simplex(incumbent + step_sizes * rng.standard_normal((n_local, num_weights)))
    return np.vstack(
        [
            rng.dirichlet(np.ones(num_weights), n_random),
            np.eye(num_weights),
            np.full((1, num_weights), 1 / num_weights),
            local,
        ]
    )


# ---- Ask / tell ----


class BayesOpt:
    """GP + log-EI optimiser of K weights on the simplex, with a resumable JSONL trial log.

    Every ask() draws its randomness from (seed, number of trials told, position after them), so a
    run resumed from its log asks exactly what the uninterrupted run would have asked with no
    points pending."""

    def __init__(
        self,
        names: Sequence[str],
        log_path: str | None = None,
        seed: int = 0,
        n_initial: int = 4,
        xi: float = 0.01,
        n_random: int = 2000,
        n_local: int = 500,
        n_restarts: int = 2,
    ):
        """names: the K weight names; n_initial: trials (centroid, then Dirichlet(1) samples) before
        the GP takes over; xi: EI margin in standard deviations of the observed values;
        n_random / n_local: Dirichlet / incumbent-step candidates per ask; n_restarts: GP fits."""
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"names must be at least 2 distinct weight names, got {list(names)}")
        if n_initial < 1:
            raise ValueError(f"n_initial must be >= 1, got {n_initial}")
        self.names, self.log_path, self.seed, self.n_initial = tuple(names), log_path, seed, n_initial
        self.xi, self.n_random, self.n_local, self.n_restarts = xi, n_random, n_local, n_restarts
        self.trials: list[dict] = []
        self.pending: list[dict[str, float]] = []  # asked by ask(n), not yet told
        self._gp_cache = (None, None)  # (number of trials it was fitted on, gp)
        if log_path is not None and os.path.exists(log_path):
            self._load_log()

    def ask(self, n: int | None = None) -> dict[str, float] | list[dict[str, float]]:
        """ask() -> the next weights to evaluate; ask(n) -> a list of n distinct weights for one
        synchronous batch, chosen by the kriging believer rule (Ginsbourger, Le Riche & Carraro 2010):
        each point maximises log EI after the points before it (and any pending ones) were added
        to the GP as fantasy observations y = mu(w) (see Posterior.believe).

        ask(n) marks its points pending until they are told; a later ask() or ask(m) before then
        treats them as fantasies too, so it continues the same sequence: ask(2) then ask(2) returns
        ask(4), never the same batch again. ask() marks nothing: it is ask(1)[0] without the
        bookkeeping, and repeated ask() calls with no tell in between return the same weights.
        Pending points live in memory only: a run resumed from its log asks from the told trials."""
        if n is None:
            return self._next_points(1)[0]
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be a positive integer, got {n!r}")
        batch = self._next_points(n)
        self.pending.extend(dict(weights) for weights in batch)  # copies: the caller may edit the batch
        return batch

    def _next_points(self, n):
        """The next n points after the pending ones. The j-th point after the told trials (pending
        included) draws its randomness from (seed, number told) for j = 0, as sequential BO always
        did, and from (seed, number told, j) after that."""
        num_told, num_weights = len(self.trials), len(self.names)
        chosen = [np.array([w[name] for name in self.names]) for w in self.pending]
        if num_told >= self.n_initial:
            gp, points, _ = self._surrogate()  # the posterior of J given the told trials
        for j in range(len(self.pending), len(self.pending) + n):
            rng = np.random.default_rng([self.seed, num_told, j] if j else [self.seed, num_told])
            if num_told + j == 0:
                point = np.full(num_weights, 1 / num_weights)
            elif num_told < self.n_initial:
                point = rng.dirichlet(np.ones(num_weights))
            else:  # the points chosen before this one, pending included, as fantasies (kriging believer)
                believed = np.array(chosen).reshape(-1, num_weights)  # (M, K)
                point = self._argmax_log_ei(gp, points, believed, rng)
            chosen.append(point)
        return [{name: float(w) for name, w in zip(self.names, point)} for point in chosen[-n:]]

    def _argmax_log_ei(self, gp, points, believed, rng):
        """The acquisition: argmax of log EI over simplex candidates, the posterior conditioned on the
        believed points (M, K), which count as observations for the incumbent and are excluded from the
        candidates."""
        if len(believed):
            gp, points = gp.believe(believed), np.vstack([points, believed])
        observed_means = gp.mean(points)  # (N + M,)
        candidates = simplex_candidates(points[np.argmax(observed_means)], rng, self.n_random, self.n_local)
        if len(believed):
            distances = np.abs(candidates[:, None, :] - believed[None]).max(axis=2)  # (C, M)
            candidates = candidates[distances.min(axis=1) > SIMPLEX_TOLERANCE]
        mu, sigma = gp.mean(candidates), gp.latent_std(candidates)  # (C,) each
        xi = self.xi * gp.value_std
        return candidates[np.argmax(log_expected_improvement(mu, sigma, observed_means.max(), xi))]

    def tell(self, weights: dict[str, float], value: float, info: dict | None = None) -> None:
        """Record J(weights) = value; appended to the log (flushed and fsync'ed) before returning.
        A pending point within SIMPLEX_TOLERANCE of weights stops being pending (the first such);
        weights that were not pending leave the pending points as they are."""
        self._check_weights(weights)
        if not math.isfinite(float(value)):
            raise ValueError(f"value must be a finite number, got {value!r}")
        trial = {
            "trial": len(self.trials),
            "weights": {name: float(weights[name]) for name in self.names},
            "value": float(value),
            "info": info or {},
        }
        line = json.dumps(trial, default=float) + "\n"  # numpy/torch scalars in info become floats
        if self.log_path is not None:
            with open(self.log_path, "a") as log:
                log.write(line)
                log.flush()
                os.fsync(log.fileno())
        self.trials.append(json.loads(line))  # exactly what a resumed run will read back
        told = np.array([weights[name] for name in self.names])
        for index, pending in enumerate(self.pending):
            if np.abs(np.array([pending[name] for name in self.names]) - told).max() <= SIMPLEX_TOLERANCE:
                del self.pending[index]  # told: now a trial, no longer a fantasy
                break

    def best(self) -> tuple[dict[str, float], float]:
        """Incumbent: the observed weights with the highest posterior mean, and that mean
        (before the GP takes over: the highest raw value)."""
        if not self.trials:
            raise ValueError("best() needs at least one told trial")
        if len(self.trials) < self.n_initial:
            trial = max(self.trials, key=lambda t: t["value"])
            return dict(trial["weights"]), trial["value"]
        _, _, observed_means = self._surrogate()
        index = int(np.argmax(observed_means))
        return dict(self.trials[index]["weights"]), float(observed_means[index])

    def _surrogate(self):
        """The Posterior of the GP fitted on all told trials (cached per trial count), their points
        (N, K) and posterior means (N,)."""
        points = np.array([[t["weights"][name] for name in self.names] for t in self.trials])
        num_fitted, gp = self._gp_cache
        if num_fitted != len(self.trials):
            values = np.array([t["value"] for t in self.trials])
            random_state = np.random.RandomState([self.seed, len(self.trials)])
            gp = posterior(fit_gp(points, values, self.n_restarts, random_state), values)
            self._gp_cache = (len(self.trials), gp)
        return gp, points, gp.mean(points)

    def _check_weights(self, weights):
        if set(weights) != set(self.names):
            raise ValueError(f"weights have names {sorted(weights)}, expected {sorted(self.names)}")
        bad = {name: w for name, w in weights.items() if not (math.isfinite(w) and w >= -SIMPLEX_TOLERANCE)}
        if bad:
            raise ValueError(f"weights {bad} are not finite and non-negative (the simplex)")
        total = sum(weights.values())
        if abs(total - 1) > SIMPLEX_TOLERANCE:
            raise ValueError(f"weights {dict(weights)} sum to {total}, expected 1 (the simplex)")

    def _load_log(self):
        """Resume from the log. A last line cut short by a crash is dropped with a warning and
        removed from the file, so the next append starts on a fresh line."""
        with open(self.log_path, "rb") as log:
            lines = log.read().split(b"\n")
        unfinished = lines.pop()  # text after the last newline: b"" unless a write was cut short
        num_complete_bytes = 0
        for number, line in enumerate(lines, start=1):
            try:
                trial = json.loads(line)
            except ValueError as error:
                if number < len(lines):
                    raise ValueError(f"{self.log_path}: line {number} is not JSON ({error})") from error
                unfinished = line
                break
            if trial.get("trial") != len(self.trials) or set(trial.get("weights", ())) != set(self.names):
                raise ValueError(
                    f"{self.log_path}: line {number} is not trial {len(self.trials)} "
                    f"over weights {list(self.names)}: {trial}"
                )
            self._check_weights(trial["weights"])
            self.trials.append(trial)
            num_complete_bytes += len(line) + 1
        if unfinished:
            message = f"{self.log_path}: ignoring an unfinished last line ({unfinished[:60]!r})"
            warnings.warn(message, stacklevel=2)
            with open(self.log_path, "r+b") as log:
                log.truncate(num_complete_bytes)
