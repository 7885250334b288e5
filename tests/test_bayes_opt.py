"""Tests for bayes_opt.py: EI and log-EI against references, the latent std, the simplex, the log,
kriging-believer batches."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.gaussian_process import GaussianProcessRegressor

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


# ---- Batches: the kriging believer ----


def told_optimizer(num_trials, seed=0, log_path=None):
    """An optimiser that has been told num_trials sequential trials of bump (with a little noise)."""
    optimizer = BayesOpt(NAMES, seed=seed, log_path=log_path)
    for step in range(num_trials):
        weights = optimizer.ask()
        optimizer.tell(weights, bump(weights) + 0.01 * math.sin(7 * step))
    return optimizer


def as_points(batch):
    return np.array([[weights[name] for name in NAMES] for weights in batch])


@pytest.mark.parametrize("num_told", [0, 2, 6])  # initial design, its end, the GP
def test_ask_n_returns_n_distinct_simplex_points_and_ask_1_is_ask(num_told):
    optimizer = told_optimizer(num_told)
    single = optimizer.ask()
    assert optimizer.ask() == single and optimizer.pending == []  # ask() marks nothing pending
    assert optimizer.ask(1) == [single] and optimizer.pending == [single]
    optimizer = told_optimizer(num_told)
    batch = optimizer.ask(5)
    assert len(batch) == 5 and all(tuple(weights) == NAMES for weights in batch)
    points = as_points(batch)
    assert points.min() >= 0 and np.allclose(points.sum(axis=1), 1, atol=1e-12, rtol=0)
    gaps = np.abs(points[:, None] - points[None]).max(axis=2) + np.eye(5)
    assert gaps.min() > bayes_opt.SIMPLEX_TOLERANCE
    assert batch[0] == single
    for n in (0, -1, 2.0):
        with pytest.raises(ValueError, match="positive integer"):
            optimizer.ask(n)


def test_a_second_batch_before_tell_continues_the_sequence_and_tell_clears_pending():
    optimizer, reference = told_optimizer(6), told_optimizer(6)
    first, second = optimizer.ask(2), optimizer.ask(2)
    assert first + second == reference.ask(4)  # not the same batch again: the next two of the same rule
    assert optimizer.ask() == reference.ask(1)[0]  # ask() too treats pending points as fantasies
    optimizer.tell(second[1], bump(second[1]))  # in any order
    assert optimizer.pending == [first[0], first[1], second[0]]
    optimizer.tell({"sparse": 0.1, "attention": 0.1, "shap": 0.8}, 0.0)  # never asked: pending as is
    assert len(optimizer.pending) == 3
    for weights in first + second[:1]:
        optimizer.tell(weights, bump(weights))
    assert optimizer.pending == [] and len(optimizer.trials) == 11


def test_batches_are_deterministic_for_a_seed_and_a_log_and_resume_asks_the_same_batch(tmp_path):
    log_path = str(tmp_path / "bo.jsonl")
    logged, uninterrupted = told_optimizer(5, seed=4, log_path=log_path), told_optimizer(5, seed=4)
    batch = logged.ask(3)
    assert uninterrupted.ask(3) == batch and told_optimizer(5, seed=5).ask(3) != batch
    for step, weights in enumerate(batch):
        logged.tell(weights, bump(weights) + 0.01 * step)
        uninterrupted.tell(weights, bump(weights) + 0.01 * step)
    next_batch = uninterrupted.ask(3)
    resumed = BayesOpt(NAMES, seed=4, log_path=log_path)
    assert resumed.trials == uninterrupted.trials and resumed.ask(3) == next_batch


def test_the_second_batch_point_is_the_log_ei_argmax_after_believing_the_first():
    optimizer = told_optimizer(6, seed=1)
    first, second = as_points(optimizer.ask(2))
    # By hand, in normalised units, with sklearn's fixed-kernel fit as the believed GP.
    gp, points, _ = optimizer._surrogate()
    values = np.array([t["value"] for t in optimizer.trials])
    y_mean, y_std = np.mean(values), np.std(values)
    data = np.vstack([points, first])
    targets = np.concatenate([(values - y_mean) / y_std, (gp.mean(first[None]) - y_mean) / y_std])
    believed = GaussianProcessRegressor(gp.kernel, optimizer=None).fit(data, targets)
    means = believed.predict(data)
    rng = np.random.default_rng([1, 6, 1])  # (seed, told, position 1 in the batch)
    candidates = bayes_opt.simplex_candidates(data[np.argmax(means)], rng, 2000, 500)
    candidates = candidates[np.abs(candidates - first).max(axis=1) > bayes_opt.SIMPLEX_TOLERANCE]
    mu, std = believed.predict(candidates, return_std=True)  # normalised units, the noise in std
    sigma = np.sqrt(std**2 - gp.kernel.k2.noise_level)
    log_ei = bayes_opt.log_expected_improvement(mu, sigma, means.max(), 0.01)
    np.testing.assert_allclose(second, candidates[np.argmax(log_ei)], atol=1e-12)
    assert np.abs(second - first).max() > bayes_opt.SIMPLEX_TOLERANCE


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
