"""parallel.py through run.py: the trial log and every arm's curve and samples do not depend on --workers, on
Ray or on a process pool; a failing arm stops the run and keeps the finished ones; the options' checks."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

import checks
import cli
import outputs
import parallel
import run

# 4 baselines told to the BO first, so the batch of 2 trials is the GP's (kriging believer)
ARGV = (
    "--iterations 1 --eval-every 1 --batch-size 8 --eval-prompts 8 --lime-samples 16 --trials 2 --bo-batch 2 "
)
ARGV = (ARGV + "--confirm-seeds 1 --baselines sparse,abc,shap,lime").split()
TRAIN_ARM = run.train_arm


@pytest.fixture(autouse=True)
def restore_threads():
    """run.main sets torch's thread count; put it back for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def outcome(out) -> tuple[list, dict]:
    """The trial log's lines and every finished arm's (seed, weights, curve, samples), by file name."""
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    arms = {path.name: json.loads(path.read_text()) for path in sorted((out / "arms").glob("*.json"))}
    return trials, {
        name: (arm["seed"], arm["weights"], arm["curve"], arm["samples"]) for name, arm in arms.items()
    }


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, task_cache):
    """The run with --workers 1: every arm trained in the test's own process."""
    out = tmp_path_factory.mktemp("one-worker")
    run.main([*ARGV, "--out", str(out), "--cache-dir", task_cache])
    return outcome(out)


def spy_on_workers(monkeypatch) -> list:
    made, workers = [], parallel.workers
    monkeypatch.setattr(parallel, "workers", lambda *args: made.append(workers(*args)) or made[-1])
    return made


def test_two_ray_workers_train_the_same_arms_and_trials_as_one(tmp_path, task_cache, one_worker, monkeypatch):
    import ray  # here, not at the top: the pool's processes import this file too

    made = spy_on_workers(monkeypatch)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        run.main([*ARGV, "--workers", "2", "--out", str(tmp_path), "--cache-dir", task_cache])
    finally:
        ray.shutdown()
    assert [type(workers) for workers in made] == [parallel.RayActors]
    trials, arms = outcome(tmp_path)
    assert [trial["info"]["arm"] for trial in trials] == "sparse abc shap lime trial-4 trial-5".split()
    assert trials[4]["weights"] != trials[5]["weights"]  # one batch of two distinct points
    assert arms["trial-5.json"][0] == arms["trial-4.json"][0] + 1  # trial k trains at seed + 100 + k
    assert (trials, arms) == one_worker  # values, seeds and curves, float for float


def test_another_cpus_code_paths_and_two_workers_change_no_number(tmp_path, task_cache, one_worker):
    """--numerics reproducible: run.py in a process of its own, with torch, MKL, oneDNN, OpenBLAS and
    numpy forced from outside onto the kernels of an AVX2 machine and its arms on two Ray workers, writes the
    trials and curves of the run above bit for bit (that run: this machine's own path, in this process)."""
    forced = {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "",
    }
    assert set(forced) == set(cli.REPRODUCIBLE_CPU)  # each variable the mode sets is forced otherwise
    argv = [
        *ARGV,
        "--numerics",
        "reproducible",
        "--workers",
        "2",
        "--out",
        str(tmp_path),
        "--cache-dir",
        task_cache,
    ]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "run.py", *argv],
        cwd=root,
        env={**os.environ, **forced},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert outcome(tmp_path) == one_worker


def fail_lime(arm, training, setup, options):
    """run.train_arm, with a NaN reward for the arm "lime": train_arm raises on it."""
    if arm.name == "lime":
        nan = lambda prompts, responses: torch.full((len(prompts),), float("nan"))  # noqa: E731
        setup = dataclasses.replace(setup, reward_fn=nan)
    return TRAIN_ARM(arm, training, setup, options)


def test_a_process_pool_trains_the_same_arms_and_a_failing_arm_stops_the_run(
    tmp_path, task_cache, one_worker, monkeypatch
):
    made = spy_on_workers(monkeypatch)
    monkeypatch.setattr(parallel, "has_ray", lambda: False)
    monkeypatch.setattr(run, "train_arm", fail_lime)  # the pool's processes import this file
    with pytest.raises(RuntimeError, match="arm lime, iteration 0: a non-finite evaluation"):
        run.main([*ARGV, "--workers", "2", "--out", str(tmp_path), "--cache-dir", task_cache])
    assert [type(workers) for workers in made] == [parallel.ProcessPool]
    arms = {path.name: json.loads(path.read_text()) for path in (tmp_path / "arms").glob("*.json")}
    # lime, the last baseline, starts once a worker is free: after two of sparse, abc and shap finished
    assert len(arms) >= 2 and set(arms) <= {"sparse.json", "abc.json", "shap.json"}
    assert all(
        (arm["seed"], arm["weights"], arm["curve"], arm["samples"]) == one_worker[1][name]
        for name, arm in arms.items()
    )
    assert not (tmp_path / "trials.jsonl").exists()  # the run stopped before the BO


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "0"], "--workers 0: expected >= 1"),
        (["--bo-batch", "0"], "--bo-batch 0: expected >= 1"),
        (["--ray-address", "auto"], "--ray-address needs ray: pip install ray"),
    ],
)
def test_bad_parallel_options_exit_with_a_clear_message(capsys, monkeypatch, extra, message):
    monkeypatch.setattr(parallel, "has_ray", lambda: False)  # as where ray is not installed
    with pytest.raises(SystemExit) as exit_info:
        checks.parse_options(extra)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_bo_batch_is_an_experiment_option_and_workers_is_not(tmp_path, capsys):
    outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path)]))
    run.report.write_json(str(tmp_path / "arms" / "sparse.json"), {})
    outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path), "--workers", "3"]))
    older = {k: v for k, v in run.report.read_json(str(tmp_path / "config.json")).items() if k != "bo_batch"}
    run.report.write_json(str(tmp_path / "config.json"), older)  # a folder from before --bo-batch existed
    outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path)]))  # it ran with batches of 1
    with pytest.raises(SystemExit) as exit_info:
        outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path), "--bo-batch", "4"]))
    assert exit_info.value.code == 2 and "other options {'bo_batch': (1, 4)}" in capsys.readouterr().err
