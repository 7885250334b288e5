"""run.py end to end: a --quick run's artifacts, resuming after an interrupt, bad options."""
import csv
import json
import os

import pytest
import torch

import run


@pytest.fixture(autouse=True)
def restore_threads():
    """run.main sets torch's thread count; put it back for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_run_writes_every_artifact(tmp_path, task_cache):
    out = tmp_path / "quick"
    result = run.main(["--quick", "--out", str(out), "--cache-dir", task_cache])
    arms = set(result["arms"])
    assert set(run.BASELINES) | {"trial-0", "trial-1", "bo-best-seed1", "sparse-seed1"} == arms
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 2 and all(abs(sum(t["weights"].values()) - 1) < 1e-6 for t in trials)
    with open(out / "curves.csv") as file:
        rows = list(csv.DictReader(file))
    assert {row["arm"] for row in rows} == arms
    assert {int(row["iteration"]) for row in rows} == {0, 2, 4}  # --quick: 4 iterations, every 2
    page = (out / "tokens.html").read_text()
    for method in ("truth", "sparse", "uniform", "abc", "shap", "lime", "bo-best"):
        assert f">{method}</td>" in page
    summary = (out / "summary.md").read_text()
    assert all(f"| {arm} |" in summary for arm in arms) and "Iterations ratio bo-best / sparse" in summary
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "config.json").read_text())["iterations"] == 4
    # the PPO runs really trained: the policy moved away from the reference
    assert all(arm["kl"] != 0 for name, arm in result["arms"].items() if name != "rcfd")


def test_interrupted_run_resumes_without_repeating_finished_work(tmp_path, task_cache, monkeypatch):
    argv = ["--quick", "--baselines", "sparse", "--out", str(tmp_path), "--cache-dir", task_cache]
    train_arm = run.train_arm

    def interrupted(name, *args, **kwargs):
        if name == "trial-1":
            raise KeyboardInterrupt
        return train_arm(name, *args, **kwargs)

    monkeypatch.setattr(run, "train_arm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.main(argv)
    first_trial = (tmp_path / "trials.jsonl").read_text()
    assert len(first_trial.splitlines()) == 1
    finished = {p: os.stat(tmp_path / "arms" / p).st_mtime_ns for p in ("sparse.json", "trial-0.json")}

    monkeypatch.setattr(run, "train_arm", train_arm)
    trainer_class, made = run.ppo.PPOTrainer, []
    monkeypatch.setattr(run.ppo, "PPOTrainer", lambda *a, **k: made.append(1) or trainer_class(*a, **k))
    run.main(argv)
    assert (tmp_path / "trials.jsonl").read_text().startswith(first_trial)
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 2
    assert {p: os.stat(tmp_path / "arms" / p).st_mtime_ns for p in finished} == finished
    assert len(made) == 3  # trial-1, bo-best-seed1, sparse-seed1: nothing finished is trained again


@pytest.mark.parametrize("extra, message", [
    (["--components", "sparse,shapley"], "unknown credit component 'shapley'"),
    (["--baselines", "sparse,ppo"], "unknown baseline 'ppo'"),
    (["--prompts", "/no/such/prompts.txt"], "--prompts file '/no/such/prompts.txt' does not exist"),
    (["--weights", "WEIGHTS"], "are not on the simplex"),
])
def test_bad_options_exit_with_a_clear_message(tmp_path, capsys, extra, message):
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"sparse": 0.7, "shap": 0.7}))
    with pytest.raises(SystemExit) as exit_info:
        run.parse_options([e.replace("WEIGHTS", str(weights)) for e in extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        run.parse_options(["--help"])
    text = capsys.readouterr().out
    assert all("--" + f.replace("_", "-") in text for f in run.Options.__dataclass_fields__)
