"""report.py: the figures of the results table, on hand-made learning curves."""

import json

import numpy as np
import pytest

import report
from report import Arm
from run import objective  # J, defined with the algorithm


def arm(name, kind, group, seed, rewards, kls, every=2):
    curve = [
        {"iteration": every * i, "reward": r, "kl": k, "kl_k3": k, "train_kl": k}
        for i, (r, k) in enumerate(zip(rewards, kls))
    ]
    return Arm(name, kind, group, {"sparse": 1.0}, seed, kl_coef=0.5, curve=curve, seconds=1.0)


ARMS = {  # sparse at seed 1 ends at KL (4 + 6) / 2 = 5
    "sparse-seed1": arm("sparse-seed1", "confirm", "sparse", 1, [0, 1, 2, 3], [0, 2, 4, 6]),
    "bo-best-seed1": arm("bo-best-seed1", "confirm", "bo-best", 1, [0, 2, 4, 6], [0, 4, 8, 12]),
    "sparse-seed2": arm("sparse-seed2", "confirm", "sparse", 2, [0, 1, 2, 2], [0, 1, 2, 2]),
    "bo-best-seed2": arm("bo-best-seed2", "confirm", "bo-best", 2, [0, 3, 3, 3], [0, 1, 1, 1]),
    # a custom baseline whose name looks like a sparse confirmation seed: grouped by its fields
    "sparse-seedling": arm("sparse-seedling", "baseline", "custom", 1, [0, 5, 5, 5], [0, 2, 4, 6]),
    "trial-4": arm("trial-4", "trial", "trial", 104, [0, 9, 9, 9], [0, 9, 9, 9]),
}


def test_final_by_hand():
    a = ARMS["bo-best-seed1"]
    assert a.final == 5.0 and a.final_kl == 10.0


def test_reward_at_kl_interpolates_and_never_extrapolates():
    curve = ARMS["bo-best-seed1"].curve  # KL 0, 4, 8, 12 with reward 0, 2, 4, 6
    assert report.reward_at_kl(curve, 5.0) == pytest.approx(2 + (5 - 4) / 4 * 2)
    assert report.reward_at_kl(curve, 0.0) == 0.0
    assert report.reward_at_kl(curve, 13.0) is None  # never reached: not extrapolated
    assert report.reward_at_kl(ARMS["bo-best-seed2"].curve, 2.0) is None


def test_matched_kl_is_against_sparse_at_the_same_seed_grouped_by_fields():
    matched = report.matched_kl_rewards(ARMS)
    assert matched["bo-best-seed1"] == pytest.approx(2.5)  # at sparse-seed1's final KL 5
    assert matched["sparse-seed1"] == pytest.approx(2.5)  # its own trajectory at KL 5
    assert matched["sparse-seedling"] == pytest.approx(5.0)  # a custom arm at seed 1, not a sparse run
    assert matched["bo-best-seed2"] is None  # KL 1 throughout: never reaches sparse-seed2's 2
    assert matched["trial-4"] is None  # no sparse run at seed 104


def test_confirmation_pairs_seeds_with_intervals():
    text = report.confirmation(ARMS, report.matched_kl_rewards(ARMS), objective)
    # bo-best finals 5 and 3: mean 4, t(0.975, 1) = 12.706 x sd 1.414 / sqrt 2 = 12.71
    assert "| bo-best | 2 | +4.00 ± 12.71 |" in text
    # paired J gaps: seed 1: 0 - 0 = 0; seed 2: (2.5 + 2.5 + 2.5) / 3 - 2.5 / 3 = 5/3
    assert f"J {5 / 6:+.2f} ± " in text
    assert "reward at sparse's KL +0.00 (n = 1)" in text  # only seed 1 has both
    assert "On J, bo-best and sparse are not distinguishable on these 2 seeds (the interval holds 0)" in text
    assert "At matched KL, one pair of seeds gives no interval, so no verdict." in text


def test_verdict_by_hand():
    # gaps 1, 2, 3: mean 2, t(0.975, 2) = 4.303 x sd 1 / sqrt 3 = 2.48 > 2: the interval holds 0
    assert report.verdict([1.0, 2.0, 3.0]).startswith("bo-best and sparse are not distinguishable on these 3")
    # gaps -1.0, -1.1, -0.9: mean -1, half-width 4.303 x 0.1 / sqrt 3 = 0.25: behind
    assert report.verdict([-1.0, -1.1, -0.9]) == (
        "bo-best is behind sparse on these 3 seeds (the 95% interval excludes 0)"
    )
    assert report.verdict([2.0, 2.1, 1.9]).startswith("bo-best is ahead of sparse")


def test_arm_round_trips_through_its_json_file(tmp_path):
    path = tmp_path / "arm.json"
    path.write_text(json.dumps(ARMS["trial-4"].to_json()))
    assert Arm.from_json(json.loads(path.read_text())) == ARMS["trial-4"]


def test_smoke_summary_says_so_and_prints_no_target():
    fidelity = {name: None for name in ARMS}
    text = report.summary_table(ARMS, {"sparse": 1.0}, fidelity, objective, smoke=True)
    assert "Smoke run" in text and "target" not in text
    assert "| sparse-seedling | sparse 1.00 | +5.00 | 5.00 |" in text
    assert "| bo-best-seed2 |" in text and "| never |" in text  # never reaches sparse's KL


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
