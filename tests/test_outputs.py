"""What a run gives back besides its tables: samples.md, the policies of --save-policy, the events of
--tensorboard. One small run serves every test here."""

import copy
import os
import shutil

import pytest
import torch

import checks
import evaluation
import run

SMALL = "--iterations 2 --eval-every 1 --batch-size 8 --eval-prompts 8 --trials 2 --confirm-seeds 1".split()
ARGV = [*SMALL, "--baselines", "sparse", "--save-policy", "sparse"]  # arms: sparse, trial-1, trial-2, ...


@pytest.fixture(autouse=True)
def restore_threads():
    """run.main sets torch's thread count; put it back for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, task_cache):
    """The small run, with --tensorboard where tensorboard is installed: its folder, run.main's result,
    and each policy --save-policy saved, as it was handed over to be saved."""
    out, trained, threads = tmp_path_factory.mktemp("outputs"), {}, torch.get_num_threads()
    save_policy = run.report.save_policy

    def keep(folder, policy, *rest):
        trained[os.path.basename(folder)] = copy.deepcopy(policy)
        save_policy(folder, policy, *rest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run.report, "save_policy", keep)
        tensorboard = ["--tensorboard"] * run.report.has_tensorboard()
        result = run.main([*ARGV, *tensorboard, "--out", str(out), "--cache-dir", task_cache])
    torch.set_num_threads(threads)
    return out, result, trained


def test_samples_show_every_policy_on_the_same_prompts_and_draws(outputs, task_cache, embedded_task):
    out, result, trained = outputs
    arms = result["arms"]
    prompts = embedded_task.val_prompts[: evaluation.SAMPLE_PROMPTS]
    assert all([row["prompt"] for row in arm.samples] == prompts for arm in arms.values())
    page = (out / "samples.md").read_text()
    for name, arm in arms.items():
        row, ending = arm.samples[-1], " `[EOS]`" if arm.samples[-1]["eos"] else " …"
        assert (
            f"| {name} | {row['response'].strip()}{ending} | {row['score']:+.2f} | {row['kl']:.2f} |" in page
        )
    assert page.count("\n## ") == len(prompts)  # a table per prompt, the SFT reference first, at KL 0
    assert page.count(" | 0.00 |\n| sparse |") == 1 + len(prompts)
    # drawn from the final policy with the run's seed and a generator of their own: drawn again, the same
    torch.set_num_threads(1)
    setup = run.build_setup(checks.parse_options(["--cache-dir", task_cache]))
    assert evaluation.samples(setup, trained["sparse"], setup.ppo_config, 0) == arms["sparse"].samples


def test_a_resumed_run_shows_the_same_samples(outputs, tmp_path, task_cache):
    """From what an interrupt during trial-2 leaves (see test_run.py): two arms, their trials, the config."""
    out = outputs[0]
    shutil.copy(out / "config.json", tmp_path)
    (tmp_path / "arms").mkdir()
    for name in ("sparse", "trial-1"):
        shutil.copy(out / "arms" / f"{name}.json", tmp_path / "arms")
    (tmp_path / "trials.jsonl").write_text("".join((out / "trials.jsonl").open().readlines()[:2]))
    run.main([*SMALL, "--baselines", "sparse", "--out", str(tmp_path), "--cache-dir", task_cache])
    assert (tmp_path / "samples.md").read_text() == (out / "samples.md").read_text()


def test_a_saved_policy_loads_back_with_its_trained_log_probs(outputs, embedded_task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, result, trained = outputs
    assert sorted(os.listdir(out / "policies")) == ["bo-best-seed1", "sparse"]  # the one named, and bo-best
    folders = ", ".join(str(out / "policies" / name) for name in ("sparse", "bo-best-seed1"))
    assert (
        f"\nPolicies saved (save_pretrained, with the tokenizer): {folders}\n"
        in (out / "summary.md").read_text()
    )
    folder = out / "policies" / "sparse"
    policy, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    texts = ["the plot was not great .", "its music"]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    assert enc["input_ids"].tolist() == embedded_task.policy_tokenizer(texts, padding=True)["input_ids"]

    def logprobs(model):
        with torch.no_grad():
            return model(**enc).logits.log_softmax(-1)

    assert torch.equal(logprobs(policy), logprobs(trained["sparse"]))
    sampling = (
        policy.generation_config
    )  # as PPO sampled: the README's policy.generate(**prompt) needs no more
    assert sampling.do_sample and (sampling.top_k, sampling.min_new_tokens, sampling.max_new_tokens) == (
        0,
        4,
        16,
    )
    assert not torch.allclose(logprobs(policy), logprobs(embedded_task.policy), atol=1e-3)  # trained: not SFT


def test_tensorboard_holds_each_arms_curve_at_its_evaluations(outputs):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, result, _ = outputs
    assert sorted(os.listdir(out / "tensorboard")) == sorted(result["arms"])  # one run per arm
    for name, arm in result["arms"].items():
        events = EventAccumulator(str(out / "tensorboard" / name))
        events.Reload()
        for key in ("reward", "kl", "kl_k3"):
            written = {scalar.step: scalar.value for scalar in events.Scalars(f"eval/{key}")}
            assert written == pytest.approx({p["iteration"]: p[key] for p in arm.curve}, rel=1e-6, abs=1e-6)
        written = {scalar.step: scalar.value for scalar in events.Scalars("train/kl")}  # after update k
        assert written == pytest.approx({p["iteration"]: p["train_kl"] for p in arm.curve[1:]}, rel=1e-6)
        statistics = {"reward", "entropy", "value_loss", "clip_fraction", "kl_coef"}
        assert {f"train/{name}" for name in statistics} <= set(events.Tags()["scalars"])


def test_tensorboard_missing_fails_in_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(run.report, "has_tensorboard", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        checks.parse_options(["--tensorboard"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: --tensorboard needs tensorboard: pip install tensorboard\n"
    )
