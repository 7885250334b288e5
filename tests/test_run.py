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
    # the baselines on the BO's simplex are told first (free observations), then 2 BO trials
    assert [trial["info"]["arm"] for trial in trials] == [
        "sparse",
        "abc",
        "shap",
        "lime",
        "trial-0",
        "trial-1",
    ]
    assert trials[1]["weights"] == {"sparse": 0.2, "attention": 0.8, "shap": 0.0, "lime": 0.0}
    assert trials[2]["value"] == result["arms"]["shap"]["auc"]
    assert all(abs(sum(trial["weights"].values()) - 1) < 1e-6 for trial in trials)
    seeds = {name: arm["seed"] for name, arm in result["arms"].items()}
    assert len({seeds["sparse"], seeds["trial-0"], seeds["trial-1"], seeds["bo-best-seed1"]}) == 4
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
    assert len(first_trial.splitlines()) == 2  # the sparse baseline, told to the BO, and trial-0
    finished = {p: os.stat(tmp_path / "arms" / p).st_mtime_ns for p in ("sparse.json", "trial-0.json")}

    monkeypatch.setattr(run, "train_arm", train_arm)
    trainer_class, made = run.ppo.PPOTrainer, []
    monkeypatch.setattr(run.ppo, "PPOTrainer", lambda *a, **k: made.append(1) or trainer_class(*a, **k))
    result = run.main(argv)
    assert {"trial-0", "trial-1"} <= set(result["arms"])  # finished before the resume, still reported
    assert "| trial-0 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "trials.jsonl").read_text().startswith(first_trial)
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 3
    assert {p: os.stat(tmp_path / "arms" / p).st_mtime_ns for p in finished} == finished
    assert len(made) == 3  # trial-1, bo-best-seed1, sparse-seed1: nothing finished is trained again


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--components", "sparse,shapley"], "unknown credit component 'shapley'"),
        (["--baselines", "sparse,ppo"], "unknown baseline 'ppo'"),
        (["--prompts", "/no/such/prompts.txt"], "--prompts file '/no/such/prompts.txt' does not exist"),
        (["--weights", "WEIGHTS"], "are not on the simplex"),
    ],
)
def test_bad_options_exit_with_a_clear_message(tmp_path, capsys, extra, message):
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"sparse": 0.7, "shap": 0.7}))
    with pytest.raises(SystemExit) as exit_info:
        run.parse_options([e.replace("WEIGHTS", str(weights)) for e in extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_folder_holding_a_run_with_other_training_options_is_refused(tmp_path):
    run.claim_output_folder(run.parse_options(["--out", str(tmp_path)]))
    run.claim_output_folder(
        run.parse_options(["--out", str(tmp_path), "--threads", "1"])
    )  # rounding, not the experiment
    with pytest.raises(SystemExit) as exit_info:  # its finished arms were trained otherwise
        run.claim_output_folder(run.parse_options(["--out", str(tmp_path), "--learning-rate", "1e-4"]))
    assert "other options {'learning_rate': (0.0002, 0.0001)}" in str(exit_info.value)


def test_quick_run_has_a_folder_of_its_own():
    assert run.parse_options(["--quick"]).out == "runs/quick"
    assert run.parse_options(["--quick", "--out", "elsewhere"]).out == "elsewhere"
    assert run.parse_options([]).out == "runs/default"


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        run.parse_options(["--help"])
    text = capsys.readouterr().out
    assert all("--" + f.replace("_", "-") in text for f in run.Options.__dataclass_fields__)


def save_real_model_pair(folder, corpus):
    """A GPT-2 policy with a byte-level BPE tokenizer and a DistilBERT RM with a WordPiece
    tokenizer (so the two tokenizers differ), saved as a real checkpoint would be."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=200,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    policy_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    eos = policy_tokenizer.eos_token_id
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(policy_tokenizer),
            n_positions=64,
            n_embd=32,
            n_layer=1,
            n_head=2,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    ).save_pretrained(folder / "policy")
    policy_tokenizer.save_pretrained(folder / "policy")

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.pre_tokenizer, wordpiece.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    wordpiece.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, wordpiece.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
    )
    reward_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],  # as DistilBERT's own tokenizer: no token types
    )
    DistilBertForSequenceClassification(
        DistilBertConfig(
            vocab_size=len(reward_tokenizer),
            dim=32,
            hidden_dim=64,
            n_layers=1,
            n_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1},
        )
    ).save_pretrained(folder / "rm")
    reward_tokenizer.save_pretrained(folder / "rm")


def test_quick_run_on_a_real_model_pair_with_different_tokenizers(tmp_path):
    import random

    import task

    rng = random.Random(0)
    corpus = [" ".join(task.random_review(rng)) for _ in range(300)]
    save_real_model_pair(tmp_path, corpus)
    lines = [
        " ".join(review.split()[:3]) + ("\t" + " ".join(review.split()[3:]) if i % 2 else "")
        for i, review in enumerate(corpus[:40])
    ]
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run.main(
        [
            "--quick",
            "--baselines",
            "sparse,abc,shap,lime,rcfd",
            "--out",
            str(out),
            "--policy",
            str(tmp_path / "policy"),
            "--reward-model",
            str(tmp_path / "rm"),
            "--prompts",
            str(tmp_path / "prompts.txt"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    # RCfD needs a demonstration for every training prompt: half have none, so it is skipped
    assert set(result["arms"]) == {
        "sparse",
        "abc",
        "shap",
        "lime",
        "trial-0",
        "trial-1",
        "bo-best-seed1",
        "sparse-seed1",
    }
    assert not (tmp_path / "cache").exists()  # nothing embedded was built
    page = (out / "tokens.html").read_text()
    assert ">abc</td>" in page and ">truth</td>" not in page  # no ground truth outside the embedded task
    assert "| shap | shap 1.00 |" in (out / "summary.md").read_text()
