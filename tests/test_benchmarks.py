"""The benchmarks' smoke modes: every step of a benchmark, tiny, on the default task."""

import importlib.util
import json
import os
import sys

import pytest


def load(name: str):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_anchors_smoke_prints_every_table_verdict_and_figure(tmp_path, task_cache, monkeypatch, capsys):
    bench = load("bench_anchors")
    argv = ["bench_anchors.py", "--smoke", "--out", str(tmp_path), "--cache-dir", task_cache]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    out = capsys.readouterr().out
    assert "learning rate 1.41e-05: held-out reward gained" in out
    for title in ("(a) ABC's protocol", "(c) our protocol", "(b) length sweep, 4-16 tokens"):
        assert title + ("" if "sweep" in title else ", 4-16 tokens") in out
    claims = [line for line in out.splitlines() if "->" in line]
    assert claims and all(line.rsplit("-> ", 1)[1] in bench.VERDICTS for line in claims)
    assert (tmp_path / "anchors-frontier.png").stat().st_size > 0
    assert (tmp_path / "anchors-length.png").stat().st_size > 0
    arms = os.listdir(tmp_path / "abc-protocol" / "arms")
    methods = ("sparse", "uniform", "abc", "true_shapley")
    assert sorted(arms) == sorted(f"{m}-seed{s}.json" for m in methods for s in (1, 2))


@pytest.mark.parametrize(
    "gaps, anchor_sign, expected",
    [
        ([1.0, 1.2, 0.9], 1, "reproduces"),
        ([1.0, 1.2, 0.9], -1, "does not reproduce"),
        ([1.0, -1.0, 0.1], 1, "within noise"),
        ([-2.0, -2.1, -1.9], 1, "does not reproduce"),
    ],
)
def test_bench_anchors_verdict_reads_the_interval(gaps, anchor_sign, expected):
    assert load("bench_anchors").verdict(gaps, anchor_sign) == expected


def test_bench_anchors_matches_kl_per_seed_and_leaves_out_a_pair_below_zero():
    bench = load("bench_anchors")

    def arm(method, seed, points):
        curve = [dict(iteration=i, reward=r, kl=k) for i, (r, k) in enumerate(points)]
        return bench.run.Arm(f"{method}-seed{seed}", "baseline", method, {}, seed, 0.05, curve)

    cells = {
        # final KLs (the mean of the last two evaluations) 4 and 8: K = 4, sparse 2, abc 3 (halfway to 8)
        ("sparse", 1): arm("sparse", 1, [(0, 0), (2, 4), (2, 4)]),
        ("abc", 1): arm("abc", 1, [(0, 0), (6, 8), (6, 8)]),
        # a negative k1 estimate, K = -2: the abc trajectory, from 0 upwards, never reaches it
        ("sparse", 2): arm("sparse", 2, [(0, 0), (1, -2), (1, -2)]),
        ("abc", 2): arm("abc", 2, [(0, 0), (5, 6), (5, 6)]),
    }
    assert bench.matched_gaps(cells, "abc") == {1: 1.0}


def test_bench_anchors_runs_only_the_parts_asked(tmp_path, task_cache, monkeypatch, capsys):
    bench = load("bench_anchors")
    argv = ["bench_anchors.py", "--smoke", "--parts", "b"]
    argv += ["--learning-rate", "4.46e-4"]
    argv += ["--out", str(tmp_path), "--cache-dir", task_cache]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    out = capsys.readouterr().out
    assert "4-16 tokens, learning rate 0.000446: held-out reward gained" in out
    assert "(lr)" not in out and "(a) ABC's protocol" not in out and "(b) length sweep, 4-16 tokens" in out
    assert sorted(os.listdir(tmp_path)) == ["anchors-length.png", "sweep-4-16-lr0.000446"]


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("anchors", ["--parts", "c"], "--parts c: expected some of lr,a,c,b, c only with a"),
        ("anchors", ["--parts", "b,x"], "--parts b,x: expected some of lr,a,c,b"),
        ("anchors", ["--ranges", "8-16,100-200"], "--ranges 8-16,100-200: 100-200 is not one of 8-16,20-30"),
        ("anchors", ["--methods", "sparse,shap"], "--methods sparse,shap: expected some of sparse,"),
        ("anchors", ["--parts", "b"], "--learning-rate: give it exactly when --parts"),
        ("anchors", ["--learning-rate", "1e-4"], "--learning-rate: give it exactly when --parts"),
        ("estimators", ["--estimators", "gae-1,grpo"], "--estimators gae-1,grpo: 'grpo' is not one of"),
        ("estimators", ["--ranges", "8-16,20-30"], "--ranges 8-16,20-30: '20-30' is not one of"),
        ("estimators", ["--seeds", "1"], "--seeds 1: expected >= 2"),
    ],
)
def test_benchmarks_refuse_bad_values_in_one_line(name, argv, message, monkeypatch, capsys):
    bench = load(f"bench_{name}")
    monkeypatch.setattr(sys, "argv", [f"bench_{name}.py", *argv])
    with pytest.raises(SystemExit) as exit_:
        bench.parse()
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bench_estimators_smoke_trains_each_estimator_and_prints_the_map(
    tmp_path, task_cache, monkeypatch, capsys
):
    bench = load("bench_estimators")
    argv = ["bench_estimators.py", "--smoke", "--out", str(tmp_path), "--cache-dir", task_cache]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    out = capsys.readouterr().out
    assert "gae-1, 4-16 tokens, lr" in out and "group, 4-16 tokens, lr" in out
    assert "map: dense method - sparse of the same estimator, at matched KL" in out
    assert "4-16 tokens: the best sparse estimator is" in out
    calls = [line for line in out.splitlines() if "-> " in line and "(" in line]
    assert calls and all(line.rsplit("-> ", 1)[1].strip() in bench.CALLS.values() for line in calls)
    configs = {
        folder: json.loads((tmp_path / folder / "config.json").read_text()) for folder in os.listdir(tmp_path)
    }
    assert {c["advantage"] for c in configs.values()} == {"gae", "group"}
    assert all(c["group_size"] == 2 for c in configs.values() if c["advantage"] == "group")
