"""Bayesian optimisation of the shaping weights on the probability simplex.

The outer loop of Koo et al. 2025 (arXiv 2504.16272): one evaluation
J(w) is a whole PPO run with shaping weights w (w_k >= 0, sum_k w_k = 1),
so there are few, noisy values and it pays to choose w carefully. The
GP posterior is surrogate.py's: copy the two files together.

    surrogate    J ~ GP(c Matern_5/2(w, w') + white noise),
                 a length scale per weight
    incumbent    f_best = max_i mu(w_i), the observed points
    acquisition  EI(w) = E[max(f(w) - f_best - xi, 0)]  (Jones 1998)
                       = sigma (z Phi(z) + phi(z)),
                 z = (mu - f_best - xi) / sigma
    next w       argmax of log EI over simplex candidates
                 (Ament et al. 2023, LogEI)
    batch of n   kriging believer (Ginsbourger et al. 2010): after
                 w_j, condition the GP on the fantasy y_j = mu(w_j),
                 hyperparameters fixed; choose w_{j+1} the same way

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

import numpy as np
from scipy.special import erfcx
from scipy.stats import norm

from surrogate import fit_gp, posterior

SIMPLEX_TOLERANCE = 1e-6
FAR_TAIL = -1e3  # below this z, log EI comes from its asymptotic series
LOCAL_STEP_SIZES = (0.02, 0.05, 0.1, 0.2)  # sd of the Gaussian steps around the incumbent


# ---- Expected improvement and its logarithm ----


def expected_improvement(mu, sigma, f_best, xi=0.0):
    """Closed-form EI for maximisation (Jones et al. 1998):

    EI = E[max(f - f_best - xi, 0)],  f ~ N(mu, sigma^2)
       = (mu - f_best - xi) Phi(z) + sigma phi(z),
    z  = (mu - f_best - xi) / sigma
    """
    mu = np.asarray(mu, dtype=float)
    improvement = mu - f_best - xi
    z = improvement / sigma
    return improvement * norm.cdf(z) + sigma * norm.pdf(z)


def log_h(z):
    """log h(z), h(z) = phi(z) + z Phi(z), finite for every z
    (Ament et al. 2023, LogEI). For z <= -1, Phi(z) =
    erfcx(-z / sqrt 2) exp(-z^2 / 2) / 2, so

        log h(z) = -z^2/2 - log(2 pi)/2 + log(1 - r),
        r = |z| erfcx(-z / sqrt 2) sqrt(pi / 2).

    1 - r is ~1/z^2 and loses eps z^2 of its precision to
    cancellation, so below z = FAR_TAIL the Mills-ratio series
    h(z) = phi(z) / z^2 (1 - 3 / z^2 + O(z^-4)) takes over.
    """
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    direct, far = z > -1, z <= FAR_TAIL
    tail = ~direct & ~far
    zd, zt, zf = z[direct], z[tail], z[far]
    out[direct] = np.log(norm.pdf(zd) + zd * norm.cdf(zd))
    erfcx_t = erfcx(-zt / math.sqrt(2))
    log_r = np.log(-zt * erfcx_t) + 0.5 * math.log(math.pi / 2)  # < 0
    # log(1 - e^x), stable on both sides of -log 2
    near = np.log(-np.expm1(log_r))
    far_from_0 = np.log1p(-np.exp(log_r))
    log1mexp = np.where(log_r > -math.log(2), near, far_from_0)
    log_norm = 0.5 * math.log(2 * math.pi)
    out[tail] = -(zt**2) / 2 - log_norm + log1mexp
    out[far] = -(zf**2) / 2 - log_norm - 2 * np.log(-zf) + np.log1p(-3 / zf**2)
    return out


def log_expected_improvement(mu, sigma, f_best, xi=0.0):
    """log EI = log sigma + log h(z), z = (mu - f_best - xi) / sigma:
    it ranks candidates even where EI underflows to 0 (Ament et al.
    2023, "Unexpected Improvements to Expected Improvement")."""
    mu = np.asarray(mu, dtype=float)
    z = (mu - f_best - xi) / sigma
    return np.log(sigma) + log_h(z)


# ---- Candidates on the simplex ----


def project_to_simplex(points):
    """Euclidean projection of each row of points (M, K) onto the
    simplex {w : w >= 0, sum w = 1}: w = max(p - theta, 0)
    (Duchi et al. 2008, "Efficient projections onto the l1-ball")."""
    descending = -np.sort(-points, axis=1)  # (M, K)
    excess = np.cumsum(descending, axis=1) - 1  # (M, K)
    ranks = np.arange(1, points.shape[1] + 1)  # (K,)
    num_positive = np.sum(descending - excess / ranks > 0, axis=1)
    rows = np.arange(len(points))
    theta = excess[rows, num_positive - 1] / num_positive  # (M,)
    return np.maximum(points - theta[:, None], 0.0)


def simplex_candidates(incumbent, rng, n_random, n_local):
    """Dirichlet(1) samples, the K vertices, the centroid, and
    Gaussian steps around the incumbent projected back onto the
    simplex (edges and faces reachable): (n_random + K + 1 + n_local, K)."""
    K = len(incumbent)
    step_sizes = rng.choice(LOCAL_STEP_SIZES, size=(n_local, 1))
    steps = step_sizes * rng.standard_normal((n_local, K))  # (n_local, K)
    local = project_to_simplex(incumbent + steps)
    uniform = rng.dirichlet(np.ones(K), n_random)  # (n_random, K)
    centroid = np.full((1, K), 1 / K)
    return np.vstack([uniform, np.eye(K), centroid, local])


# ---- Ask / tell ----


class BayesOpt:
    """GP + log-EI optimiser of K weights on the simplex, with a
    resumable JSONL trial log. Every ask() draws its randomness from
    (seed, trials told, position after them), so a run resumed from
    its log asks what the uninterrupted run would have asked."""

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
        """names: the K weight names; n_initial: trials (the centroid,
        then Dirichlet(1) samples) before the GP takes over; xi: EI's
        margin in standard deviations of the observed values; n_random,
        n_local: candidates per ask; n_restarts: of each GP fit."""
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"names must be at least 2 distinct weight names, got {list(names)}")
        if n_initial < 1:
            raise ValueError(f"n_initial must be >= 1, got {n_initial}")
        self.names, self.log_path = tuple(names), log_path
        self.seed, self.n_initial, self.xi = seed, n_initial, xi
        self.n_random, self.n_local = n_random, n_local
        self.n_restarts = n_restarts
        self.trials: list[dict] = []
        self.pending: list[dict[str, float]] = []  # asked by ask(n), not told
        self._gp_cache = (None, None)  # (trials it was fitted on, gp)
        if log_path is not None and os.path.exists(log_path):
            self._load_log()

    def ask(self, n: int | None = None) -> dict[str, float] | list[dict[str, float]]:
        """ask() -> the next weights; ask(n) -> n distinct weights for
        one synchronous batch, by the kriging believer rule: each point
        maximises log EI after the points before it (pending ones too)
        joined the GP as fantasies y = mu(w) (Posterior.believe).

        ask(n) marks its points pending until told; a later ask(m)
        continues the same sequence (ask(2) then ask(2) is ask(4)).
        ask() marks nothing: it is ask(1)[0], and asked again before a
        tell it returns the same weights. Pending points live in memory
        only: a resumed run asks from the told trials."""
        if n is None:
            return self._next_points(1)[0]
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be a positive integer, got {n!r}")
        batch = self._next_points(n)
        # copies: the caller may edit the batch
        self.pending.extend(dict(weights) for weights in batch)
        return batch

    def _next_points(self, n):
        """The next n points after the pending ones. The j-th after the
        told trials draws its randomness from (seed, number told) for
        j = 0, as sequential BO did, and from (seed, told, j) after."""
        num_told, K = len(self.trials), len(self.names)
        chosen = [self._vector(w) for w in self.pending]
        if num_told >= self.n_initial:
            gp, points, _ = self._surrogate()  # J's posterior, told trials
        first = len(self.pending)
        for j in range(first, first + n):
            key = [self.seed, num_told, j] if j else [self.seed, num_told]
            rng = np.random.default_rng(key)
            if num_told + j == 0:
                point = np.full(K, 1 / K)
            elif num_told < self.n_initial:
                point = rng.dirichlet(np.ones(K))
            else:  # the points before it, pending too, as fantasies
                believed = np.array(chosen).reshape(-1, K)  # (M, K)
                point = self._argmax_log_ei(gp, points, believed, rng)
            chosen.append(point)
        return [dict(zip(self.names, map(float, p))) for p in chosen[-n:]]

    def _argmax_log_ei(self, gp, points, believed, rng):
        """The acquisition: argmax of log EI over simplex candidates,
        the posterior conditioned on the believed points (M, K), which
        count for the incumbent and are not candidates themselves."""
        if len(believed):
            gp = gp.believe(believed)
            points = np.vstack([points, believed])
        observed_means = gp.mean(points)  # (N + M,)
        incumbent = points[np.argmax(observed_means)]  # (K,)
        candidates = simplex_candidates(incumbent, rng, self.n_random, self.n_local)
        if len(believed):
            gaps = np.abs(candidates[:, None, :] - believed[None])  # (C, M, K)
            distances = gaps.max(axis=2)  # (C, M)
            candidates = candidates[distances.min(axis=1) > SIMPLEX_TOLERANCE]
        mu = gp.mean(candidates)  # (C,)
        sigma = gp.latent_std(candidates)  # (C,)
        xi = self.xi * gp.value_std
        log_ei = log_expected_improvement(mu, sigma, observed_means.max(), xi)
        return candidates[np.argmax(log_ei)]

    def tell(self, weights: dict[str, float], value: float, info: dict | None = None) -> None:
        """Record J(weights) = value, appended to the log (flushed and
        fsync'ed) before returning. The first pending point within
        SIMPLEX_TOLERANCE of weights stops being pending."""
        self._check_weights(weights)
        if not math.isfinite(float(value)):
            raise ValueError(f"value must be a finite number, got {value!r}")
        trial = {
            "trial": len(self.trials),
            "weights": {name: float(weights[name]) for name in self.names},
            "value": float(value),
            "info": info or {},
        }
        # numpy/torch scalars in info become floats
        line = json.dumps(trial, default=float) + "\n"
        if self.log_path is not None:
            with open(self.log_path, "a") as log:
                log.write(line)
                log.flush()
                os.fsync(log.fileno())
        # exactly what a resumed run will read back
        self.trials.append(json.loads(line))
        told = self._vector(weights)
        for index, pending in enumerate(self.pending):
            gap = np.abs(self._vector(pending) - told).max()
            if gap <= SIMPLEX_TOLERANCE:
                del self.pending[index]  # told: a trial, no longer a fantasy
                break

    def best(self) -> tuple[dict[str, float], float]:
        """The incumbent: the observed weights with the highest posterior
        mean, and that mean (before the GP: the highest raw value)."""
        if not self.trials:
            raise ValueError("best() needs at least one told trial")
        if len(self.trials) < self.n_initial:
            trial = max(self.trials, key=lambda t: t["value"])
            return dict(trial["weights"]), trial["value"]
        _, _, observed_means = self._surrogate()
        index = int(np.argmax(observed_means))
        return dict(self.trials[index]["weights"]), float(observed_means[index])

    def _vector(self, weights: dict[str, float]) -> np.ndarray:
        """weights as a point (K,), in the order of names."""
        return np.array([weights[name] for name in self.names])

    def _surrogate(self):
        """The Posterior of the GP fitted on all told trials (cached
        per trial count), their points (N, K) and posterior means (N,)."""
        points = np.array([self._vector(t["weights"]) for t in self.trials])
        num_fitted, gp = self._gp_cache
        if num_fitted != len(self.trials):
            values = np.array([t["value"] for t in self.trials])
            random_state = np.random.RandomState([self.seed, len(self.trials)])
            fitted = fit_gp(points, values, self.n_restarts, random_state)
            gp = posterior(fitted, values)
            self._gp_cache = (len(self.trials), gp)
        return gp, points, gp.mean(points)

    def _check_weights(self, weights):
        if set(weights) != set(self.names):
            raise ValueError(f"weights have names {sorted(weights)}, expected {sorted(self.names)}")
        floor = -SIMPLEX_TOLERANCE
        bad = {n: w for n, w in weights.items() if not (math.isfinite(w) and w >= floor)}
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
