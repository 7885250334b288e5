"""report.py: the figures of the results table, on hand-made learning curves."""

import numpy as np
import pytest

import report


def arm(name, seed, rewards, every=2):
    curve = [{"iteration": every * i, "reward": r, "kl": 0.0} for i, r in enumerate(rewards)]
    return {
        "arm": name,
        "seed": seed,
        "weights": {"sparse": 1.0},
        "curve": curve,
        "kl": 1.0,
        "seconds": 1.0,
        "auc": sum(rewards[1:]) / (len(rewards) - 1),
        "final": (rewards[-1] + rewards[-2]) / 2,
    }


ARMS = {  # sparse at seed 1 ends at (3 + 5) / 2 = 4
    "sparse-seed1": arm("sparse-seed1", 1, [0, 1, 2, 4.5, 3, 5]),
    "bo-best-seed1": arm("bo-best-seed1", 1, [0, 2, 4, 6, 6, 6]),
    "sparse-seed2": arm("sparse-seed2", 2, [0, 1, 1, 2, 2, 2]),
    "bo-best-seed2": arm("bo-best-seed2", 2, [0, 1, 1, 1, 1, 1]),
    "trial-0": arm("trial-0", 100, [0, 9, 9, 9, 9, 9]),
}


def test_first_reach_and_never():
    assert report.first_reach(ARMS["bo-best-seed1"]["curve"], 4.0) == 4
    assert report.first_reach(ARMS["bo-best-seed1"]["curve"], 0.0) == 0  # reached at the start is not "never"
    assert report.first_reach(ARMS["bo-best-seed1"]["curve"], 7.0) == "never"


def test_reach_is_against_sparse_at_the_same_seed():
    reach = report.reach_iterations(ARMS)
    assert reach["sparse-seed1"] == 6  # 4.5 at iteration 6 is the first >= 4
    assert reach["bo-best-seed1"] == 4
    assert reach["sparse-seed2"] == 6 and reach["bo-best-seed2"] == "never"
    assert reach["trial-0"] is None  # no sparse run at seed 100


def test_confirmation_ratio_counts_never_as_the_whole_run():
    text = report.confirmation(ARMS, report.reach_iterations(ARMS))
    # bo-best: (4 + 10) / 2 = 7 iterations; sparse: (6 + 6) / 2 = 6 -> ratio 7 / 6
    assert f"ratio bo-best / sparse = {7 / 6:.2f}" in text
    assert "| bo-best | 2 | +3.50 ± 2.50 |" in text


def test_fidelity_pools_real_tokens_only():
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    truth = np.array([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]])
    # 2x + 1 on every real token, nonsense on padding: perfectly faithful
    assert np.isclose(report.fidelity(2 * truth + 1 + np.array([[0, 0, -99], [0, 0, 0]]), truth, mask), 1.0)
    # real pairs (1, 1), (2, 0), (3, 1), (4, 0), (5, 1): means 3 and 0.6, covariance sum 0, so r = 0
    assert np.isclose(report.fidelity(np.array([[1, 0, 7], [1, 0, 1]]), truth, mask), 0.0)


def test_colour_sign_and_scale():
    assert report.colour(2.0, 2.0) == "rgba(0,150,0,1.00)"
    assert report.colour(-1.0, 2.0) == "rgba(210,0,0,0.50)"
    assert report.colour(0.0, 0.0) == "rgba(0,150,0,0.00)"


@pytest.mark.parametrize("name, sparse", [("sparse", True), ("sparse-seed3", True), ("bo-best-seed3", False)])
def test_is_sparse(name, sparse):
    assert report.is_sparse({"arm": name}) is sparse
