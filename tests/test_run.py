"""run.py end to end: a --quick run's artifacts, resuming after an interrupt, bad options."""

import csv
import functools
import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest
import torch

import checks
import cli
import language
import numerics
import outputs
import run


@pytest.fixture(autouse=True)
def restore_threads():
    """run.main sets torch's thread count; put it back for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# a run smaller than --quick, for the tests of one behaviour: 2 trials and 1 confirmation seed as --quick
SMALL = "--iterations 2 --eval-every 1 --batch-size 8 --eval-prompts 8 --trials 2 --confirm-seeds 1".split()


def test_quick_run_writes_every_artifact(tmp_path, task_cache, capsys):
    out = tmp_path / "quick"
    result = run.main(["--quick", "--out", str(out), "--cache-dir", task_cache])
    last = result["arms"]["sparse-seed1"]  # one line per finished arm, the last of 10 trained
    assert (
        f"sparse-seed1: final reward {last.final:+.2f}, held-out KL {last.final_kl:.1f} (10 of 10 arms)"
        in capsys.readouterr().out
    )
    arms = set(result["arms"])
    assert set(checks.arm_names(checks.parse_options(["--quick"]))) == arms  # what --save-policy may name
    # BO trials are named by their line in trials.jsonl, after the 4 baselines told first
    default_baselines = set(run.Options.baselines.split(","))  # the oracles run only when asked
    assert default_baselines | {"trial-4", "trial-5", "bo-best-seed1", "sparse-seed1"} == arms
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [trial["info"]["arm"] for trial in trials] == "sparse abc shap lime trial-4 trial-5".split()
    assert trials[1]["weights"] == {"sparse": 0.2, "attention": 0.8, "shap": 0.0, "lime": 0.0}
    shap_arm = result["arms"]["shap"]
    assert trials[2]["value"] == run.objective(shap_arm)  # the KL-regularised objective by default
    assert trials[2]["info"]["regularised"] == run.objective(shap_arm)
    assert trials[2]["info"]["auc"] == run.objective(shap_arm, "auc")
    points = shap_arm.curve[1:]
    assert run.objective(shap_arm) == pytest.approx(
        sum(p["reward"] - 0.05 * p["kl"] for p in points) / len(points)
    )
    assert all(abs(sum(trial["weights"].values()) - 1) < 1e-6 for trial in trials)
    seeds = {name: arm.seed for name, arm in result["arms"].items()}
    assert len({seeds["sparse"], seeds["trial-4"], seeds["trial-5"], seeds["bo-best-seed1"]}) == 4
    kinds = {name: (arm.kind, arm.group) for name, arm in result["arms"].items()}
    assert kinds["sparse-seed1"] == ("confirm", "sparse") and kinds["trial-4"] == ("trial", "trial")
    with open(out / "curves.csv") as file:
        rows = list(csv.DictReader(file))
    assert {row["arm"] for row in rows} == arms
    assert {int(row["iteration"]) for row in rows} == {0, 2, 4}  # --quick: 4 iterations, every 2
    assert all(
        float(row["kl"]) == 0 for row in rows if row["iteration"] == "0"
    )  # the policy is its reference
    page = (out / "tokens.html").read_text()
    for method in ("Shapley truth", "lexicon", "sparse", "uniform", "abc", "shap", "lime", "bo-best"):
        assert f">{method}</td>" in page
    summary = (out / "summary.md").read_text()
    assert all(f"| {arm} |" in summary for arm in arms)
    assert all(f"| {arm} |" in (out / "samples.md").read_text() for arm in [*arms, "SFT reference"])
    assert "Smoke run" in summary and "target" not in summary
    assert "| arm | weights | final reward | held-out KL | J | AUC | reward at sparse's KL |" in summary
    fidelity = summary.split("| shap | shap 1.00 |")[1].split("|")[5].split(" / ")
    assert len(fidelity) == 2 and all(-1 <= float(f) <= 1 for f in fidelity)  # Shapley truth / lexicon
    assert "bo-best - sparse, paired by seed" in summary
    for picture in ("curves.png", "frontier.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((out / "config.json").read_text())
    assert config["iterations"] == 4
    assert config["numerics_fingerprint"] == numerics.fingerprint(config["numerics"])  # this process's
    assert summary.rstrip().endswith(numerics.text(config["numerics_fingerprint"]))
    # the PPO runs really trained: the policy moved away from the reference (held-out KL > 0)
    assert all(arm.final_kl > 0 for arm in result["arms"].values())


@pytest.mark.parametrize("kind", ["regularised", "auc"])
def test_j_is_the_documented_equation_on_a_hand_made_curve(kind):
    """J = 1/E sum_{e>=1} (reward_e - kl_coef KL_e) ('regularised'), 1/E sum_{e>=1} reward_e ('auc')."""
    curve = [
        {"iteration": 0, "reward": 9.0, "kl": 0.0},  # the SFT policy: left out of J
        {"iteration": 2, "reward": 1.0, "kl": 2.0},
        {"iteration": 4, "reward": 3.0, "kl": 4.0},
        {"iteration": 6, "reward": 2.0, "kl": 10.0},
    ]
    arm = run.Arm("a", "trial", "trial", {"sparse": 1.0}, 0, kl_coef=0.5, curve=curve)
    expected = {"regularised": ((1 - 1) + (3 - 2) + (2 - 5)) / 3, "auc": (1 + 3 + 2) / 3}[kind]
    assert run.objective(arm, kind) == pytest.approx(expected)


def test_target_kl_reaches_the_trainer_of_every_arm(tmp_path, task_cache, monkeypatch):
    trainer_class, trainers = run.ppo.PPOTrainer, []

    def recorded(*args, **kwargs):
        trainers.append(trainer_class(*args, **kwargs))
        return trainers[-1]

    monkeypatch.setattr(run.ppo, "PPOTrainer", recorded)
    argv = [*SMALL, *"--baselines sparse,shap --trials 1 --target-kl 1000 --kl-horizon 64".split()]
    run.main([*argv, "--out", str(tmp_path), "--cache-dir", task_cache])
    assert len(trainers) == 5  # two baselines, one trial, bo-best and sparse at one confirm seed
    # KL far below 1000: each of the 2 iterations scales beta by 1 + clip(KL / 1000 - 1, -0.2, 0.2) * 8 / 64
    assert all(t.config.target_kl == 1000 for t in trainers)
    assert all(t.kl_coef == pytest.approx(0.05 * (1 - 0.2 * 8 / 64) ** 2) for t in trainers)


def test_interrupted_run_resumes_without_repeating_finished_work(tmp_path, task_cache, monkeypatch):
    argv = [*SMALL, "--baselines", "sparse", "--out", str(tmp_path), "--cache-dir", task_cache]
    train_arm = run.train_arm

    def interrupted(arm, *args, **kwargs):
        if arm.name == "trial-2":
            raise KeyboardInterrupt
        return train_arm(arm, *args, **kwargs)

    monkeypatch.setattr(run, "train_arm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run.main(argv)
    first_trial = (tmp_path / "trials.jsonl").read_text()
    assert len(first_trial.splitlines()) == 2  # the sparse baseline, told to the BO, and trial-1
    finished = {p: os.stat(tmp_path / "arms" / p).st_mtime_ns for p in ("sparse.json", "trial-1.json")}

    monkeypatch.setattr(run, "train_arm", train_arm)
    trainer_class, made = run.ppo.PPOTrainer, []
    monkeypatch.setattr(run.ppo, "PPOTrainer", lambda *a, **k: made.append(1) or trainer_class(*a, **k))
    result = run.main(argv)
    assert {"trial-1", "trial-2"} <= set(result["arms"])  # finished before the resume, still reported
    assert "| trial-1 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "trials.jsonl").read_text().startswith(first_trial)
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 3
    assert {p: os.stat(tmp_path / "arms" / p).st_mtime_ns for p in finished} == finished
    assert len(made) == 3  # trial-2, bo-best-seed1, sparse-seed1: nothing finished is trained again


def test_a_resumed_folder_trained_under_other_numerics_warns_in_one_line(tmp_path, capsys):
    """The finished arms of the folder were trained under another fingerprint: one warning line before
    the resume, and config.json then holds this process's fingerprint."""
    options = checks.parse_options(["--out", str(tmp_path)])
    other = {"mode": "reproducible", "id": "00000000", "classes": {"matmul": "000000"}, "versions": {}}
    (tmp_path / "arms").mkdir()
    (tmp_path / "arms" / "sparse.json").write_text("{}")
    (tmp_path / "config.json").write_text(json.dumps(vars(options) | {"numerics_fingerprint": other}))
    outputs.claim_output_folder(options)
    lines = capsys.readouterr().out.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning:"))
    assert "fingerprint 00000000" in lines[warning] and "matmul" in lines[warning]
    assert lines[warning + 1].startswith("resuming: 1 finished arms")
    now = json.loads((tmp_path / "config.json").read_text())["numerics_fingerprint"]
    assert now == numerics.fingerprint(options.numerics) and now["id"] != "00000000"
    outputs.claim_output_folder(options)  # resumed again under the same numerics: no warning
    assert "warning:" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--components", "sparse,shapley"], "unknown credit component 'shapley'"),
        (["--baselines", "sparse,ppo"], "unknown baseline 'ppo'"),
        (["--prompts", "/no/such/prompts.txt"], "--prompts file '/no/such/prompts.txt' does not exist"),
        (["--weights", "WEIGHTS"], "are not on the simplex"),
        (["--iterations", "0"], "--iterations 0: expected >= 1"),
        (["--batch-size", "1"], "--batch-size 1: expected >= 2"),
        (["--shap-permutations", "0"], "--shap-permutations 0: expected >= 1"),
        (["--eval-every", "40"], "--eval-every 40 > --iterations"),
        (["--min-new-tokens", "20"], "--min-new-tokens > --max-new-tokens"),
        (["--components", "shap"], "--components 'shap': expected at least 2 distinct components"),
        (["--kl-coef", "-1"], "--kl-coef -1.0: expected >= 0"),
        (["--target-kl", "0"], "--target-kl 0.0 <= 0"),
        (["--objective", "reward"], "--objective 'reward': expected"),
        (["--save-policy", "sparse,best"], "--save-policy: no arm 'best' in this run; expected some of"),
        (["--group-size", "3"], "--batch-size 64: expected a multiple of --group-size 3"),
        (["--advantage", "group"], "PPO settings: group_size=1 with advantage='group'"),
        (["--advantage", "grpo"], "PPO settings: advantage='grpo', expected one of"),
        (["--device", "cuda:7"], "PPO settings: device='cuda:7'"),
    ],
)
def test_bad_options_exit_with_a_clear_message(tmp_path, capsys, extra, message):
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"sparse": 0.7, "shap": 0.7}))
    with pytest.raises(SystemExit) as exit_info:
        checks.parse_options([e.replace("WEIGHTS", str(weights)) for e in extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_folder_holding_a_run_with_other_training_options_is_refused(tmp_path, capsys):
    outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path)]))
    # a config but no finished arm (a start that failed early): new options are welcome
    outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path), "--learning-rate", "3e-4"]))
    outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path)]))
    run.report.write_json(str(tmp_path / "arms" / "sparse.json"), {})
    outputs.claim_output_folder(
        checks.parse_options(["--out", str(tmp_path), "--threads", "1"])
    )  # not the experiment
    with pytest.raises(SystemExit) as exit_info:  # its finished arms were trained otherwise
        outputs.claim_output_folder(checks.parse_options(["--out", str(tmp_path), "--learning-rate", "1e-4"]))
    assert exit_info.value.code == 2
    assert "other options {'learning_rate': (0.0002, 0.0001)}" in capsys.readouterr().err


def test_an_unloadable_model_name_fails_in_one_line_and_claims_no_folder(tmp_path, task_cache, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run.main(
            ["--quick", "--policy", "no-such-org/no-such-model", "--out", str(out), "--cache-dir", task_cache]
        )
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot load the policy tokenizer 'no-such-org/no-such-model'" in lines[0]
    assert not (out / "config.json").exists()  # the corrected retry may use the folder with any options


def test_a_response_longer_than_the_models_hold_fails_in_one_line_and_claims_no_folder(
    tmp_path, task_cache, capsys
):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:  # the default task's models hold 64 positions
        lengths = ["--min-new-tokens", "90", "--max-new-tokens", "110"]
        run.main(["--quick", *lengths, "--out", str(out), "--cache-dir", task_cache])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--max-new-tokens 110" in lines[0] and "the policy holds 64" in lines[0]
    assert "--reviews sized" in lines[0] and not out.exists()


def test_oracle_credit_is_refused_on_a_real_model_pair(capsys):
    with pytest.raises(SystemExit):
        checks.parse_options(["--baselines", "sparse,true_shapley", "--policy", "gpt2"])
    assert "credit ['true_shapley'] is the embedded task's truth" in capsys.readouterr().err


def test_long_sized_reviews_train_one_tiny_arm_end_to_end(tmp_path, monkeypatch):
    """--reviews sized builds a task whose models hold 90-110-token responses, and an oracle arm trains."""
    tiny = dict(n_reviews=300, n_train_prompts=8, n_val_prompts=4, sized_rm_steps=2, sft_steps=2)
    monkeypatch.setattr(run.task, "TaskConfig", functools.partial(run.task.TaskConfig, **tiny))
    argv = "--reviews sized --min-new-tokens 90 --max-new-tokens 110 --iterations 1 --batch-size 2"
    argv += " --eval-every 1 --eval-prompts 2 --trials 0 --confirm-seeds 0 --baselines true_shapley"
    argv += " --components sparse,true_shapley"
    result = run.main([*argv.split(), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    arm = result["arms"]["true_shapley"]
    assert arm.weights == {"true_shapley": 1.0} and len(arm.curve) == 2
    response = arm.samples[0]["response"].split()
    assert 89 <= len(response) <= 110  # EOS blocked before 90 tokens (it decodes to nothing)


def test_a_live_run_holds_its_folder_and_a_killed_one_leaves_no_stuck_lock(tmp_path, capsys):
    hold = "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held')"
    command = [sys.executable, "-u", "-c", hold + "; time.sleep(60)", str(tmp_path / ".lock")]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(SystemExit) as exit_info, run.locked(str(tmp_path)):
        pass
    assert exit_info.value.code == 2 and "is in use by another run.py" in capsys.readouterr().err
    holder.kill()
    holder.wait()
    assert (tmp_path / ".lock").exists()  # the killed run's lock file stays; its lock does not
    with run.locked(str(tmp_path)):
        pass


def test_a_nan_reward_stops_the_run_naming_the_arm_and_writes_no_nan(tmp_path, task_cache, monkeypatch):
    build_setup = run.build_setup

    def setup_with_a_nan_reward(options):
        setup = build_setup(options)
        setup.reward_fn = lambda prompts, responses: torch.full((len(prompts),), float("nan"))
        return setup

    monkeypatch.setattr(run, "build_setup", setup_with_a_nan_reward)
    with pytest.raises(RuntimeError, match="arm sparse, iteration 0: a non-finite evaluation"):
        run.main(["--quick", "--out", str(tmp_path), "--cache-dir", task_cache])
    assert not list(tmp_path.rglob("*.json*")) or [p.name for p in tmp_path.rglob("*.json*")] == [
        "config.json"
    ]


def test_quick_run_has_a_folder_of_its_own():
    assert checks.parse_options(["--quick"]).out == "runs/quick"
    assert checks.parse_options(["--quick", "--out", "elsewhere"]).out == "elsewhere"
    assert checks.parse_options([]).out == "runs/default"


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        checks.parse_options(["--help"])
    text = capsys.readouterr().out
    assert all("--" + f.replace("_", "-") in text for f in run.Options.__dataclass_fields__)


def test_every_ppo_setting_is_a_flag_with_the_dataclass_default_and_reaches_the_trainer():
    """One source of truth: PPOConfig's fields (but the per-arm seed) are run.py's flags, read from ppo.py."""
    ppo_fields = {f.name: f.default for f in fields(run.ppo.PPOConfig) if f.name != "seed"}
    flags = {f.name: f.default for f in fields(run.Options) if f.name in ppo_fields}
    assert flags == ppo_fields
    help_of = {f.name: f.metadata["help"] for f in fields(run.Options)}
    assert all(help_of[name] for name in ppo_fields)  # each with its docstring
    options = checks.parse_options(["--lam", "1", "--minibatch-size", "1", "--no-whiten-advantages"])
    config = run.ppo.PPOConfig(**{name: getattr(options, name) for name in run.cli.PPO_OPTIONS})
    assert (config.lam, config.minibatch_size, config.whiten_advantages) == (1.0, 1, False)


def test_help_answers_before_the_heavy_imports():
    """`python run.py --help` exits in its first parse, before torch, transformers or shap are imported."""
    script = (
        "import runpy, sys\n"
        "try:\n    runpy.run_path('run.py', run_name='__main__')\n"
        "except SystemExit:\n    print(sorted({'torch', 'transformers', 'shap'} & set(sys.modules)))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script, "--help"], cwd=root, capture_output=True, text=True)
    assert "--bo-batch" in done.stdout and done.stdout.strip().endswith("[]")


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

    rng = random.Random(0)
    corpus = [" ".join(language.random_review(rng)) for _ in range(300)]
    save_real_model_pair(tmp_path, corpus)
    lines = [
        " ".join(review.split()[:3]) + ("\t" + " ".join(review.split()[3:]) if i % 2 else "")
        for i, review in enumerate(corpus[:40])
    ]
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run.main(
        [
            *SMALL,
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
        "trial-4",
        "trial-5",
        "bo-best-seed1",
        "sparse-seed1",
    }
    assert not (tmp_path / "cache").exists()  # nothing embedded was built
    page = (out / "tokens.html").read_text()
    assert ">abc</td>" in page and ">lexicon</td>" not in page  # no ground truth outside the embedded task
    assert "| shap | shap 1.00 |" in (out / "summary.md").read_text()


def test_reproducible_numerics_replace_what_the_user_exported_and_refuse_a_late_start(monkeypatch, capsys):
    for name in cli.REPRODUCIBLE_CPU:
        monkeypatch.setenv(name, "AVX2")
    cli.pin_numerics("native")  # leaves the environment as it is
    assert all(os.environ[name] == "AVX2" for name in cli.REPRODUCIBLE_CPU)
    assert not cli.numerics_in_force("reproducible") and cli.numerics_in_force("native")
    with pytest.raises(SystemExit) as exit_info:  # torch loaded while the variables said AVX2
        run.main(["--numerics", "reproducible", "--out", "unused"])
    assert exit_info.value.code == 2
    assert "--numerics reproducible: torch loaded before its settings" in capsys.readouterr().err
    cli.pin_numerics("reproducible")
    assert {name: os.environ[name] for name in cli.REPRODUCIBLE_CPU} == cli.REPRODUCIBLE_CPU
    assert cli.numerics_in_force("reproducible")  # the test session's torch loaded after conftest pinned


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_fails_in_one_line_and_claims_no_folder(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--device", "cuda", "--quick", "--out", str(out)])
    assert exit_info.value.code == 2
    reported = "a CPU-only build" if torch.version.cuda is None else "sees 0 CUDA device(s)"
    error = capsys.readouterr().err.strip()  # argparse's usage, then the one line
    assert reported in error.splitlines()[-1] and "device='cuda'" in error and "Traceback" not in error
    assert not out.exists()
