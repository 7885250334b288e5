"""credit.py: one registry of credit methods and baselines, as run.py trains them.

A method registered once is a --components entry and a baseline; a baseline's reward and KL
are data of its record; the explainers chosen on the command line agree with each other.
"""

import dataclasses
import json

import pytest
import torch

import checks
import coalitions
import credit
import language
import run
import sampling

# a run smaller than --quick: 2 trials and 1 confirmation seed
SMALL = "--iterations 2 --eval-every 1 --batch-size 8 --eval-prompts 8 --trials 2 --confirm-seeds 1".split()


@pytest.fixture(autouse=True)
def restore_threads():
    """run.main sets torch's thread count; put it back for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_baseline_trains_on_the_reward_and_kl_its_record_names_whatever_its_name(task_cache, monkeypatch):
    """RCfD's reward and its KL of 0 are data of the Baseline record: another name trains the same way."""
    monkeypatch.setitem(credit.BASELINES, "calibrated", credit.BASELINES["rcfd"])
    options = checks.parse_options(
        [*SMALL, "--iterations", "1", "--baselines", "calibrated", "--cache-dir", task_cache]
    )
    setup = run.build_setup(options)
    rewards, trainers = [], []
    reward_components, trainer_class = run.reward_components, run.ppo.PPOTrainer
    monkeypatch.setattr(run, "reward_components", lambda *a: rewards.append(a[-1]) or reward_components(*a))
    monkeypatch.setattr(
        run.ppo, "PPOTrainer", lambda *a, **k: trainers.append(trainer_class(*a, **k)) or trainers[-1]
    )
    monkeypatch.setattr(run.report, "write_json", lambda *args: None)  # no arm file
    for name in ("calibrated", "sparse"):
        arm = run.Arm(name, "baseline", name, credit.BASELINES[name].weights, 0, options.kl_coef)
        run.train_arm(arm, credit.BASELINES[name].training, setup, options)
    assert rewards == ["rcfd", "rm"]
    assert [t.config.kl_coef for t in trainers] == [0.0, options.kl_coef]
    assert not credit.on_the_simplex(
        credit.BASELINES["calibrated"], ["sparse", "shap"]
    )  # not a point of the BO
    assert credit.on_the_simplex(credit.BASELINES["sparse"], ["sparse", "shap"])


def first_token_credit(setup, batch):
    """A trivial credit method: all of R's explanation on each response's first token (reward units)."""
    credit = torch.zeros(batch.response_mask.shape)  # (B, T)
    credit[:, 0] = 1.0
    return credit


def test_a_credit_method_registered_once_is_a_component_and_a_baseline(tmp_path, task_cache, monkeypatch):
    monkeypatch.setitem(credit.CREDIT_METHODS, "first_token", credit.CreditMethod(first_token_credit))
    argv = [
        *SMALL,
        "--trials",
        "1",
        "--components",
        "sparse,first_token",
        "--baselines",
        "sparse,first_token",
    ]
    result = run.main([*argv, "--out", str(tmp_path), "--cache-dir", task_cache])
    assert result["arms"]["first_token"].weights == {"first_token": 1.0}  # a baseline of its name
    trials = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert [trial["info"]["arm"] for trial in trials] == ["sparse", "first_token", "trial-2"]
    assert set(trials[2]["weights"]) == {"sparse", "first_token"}  # a weight the BO searches
    setup = run.build_setup(checks.parse_options(["--cache-dir", task_cache]))
    enc = setup.tokenizer(setup.task.val_prompts[:4], return_tensors="pt", padding=True)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    policy, config = setup.task.policy, setup.ppo_config
    ids, mask = sampling.sample(policy, enc["input_ids"], enc["attention_mask"], config, pad, eos)  # (B, T)
    components, scores = run.reward_components(setup, enc["input_ids"], ids, mask, ["first_token"])
    expected = torch.zeros(mask.shape)  # (B, T)
    expected[:, 0] = 1.0
    expected[torch.arange(len(mask)), mask.sum(1) - 1] += scores - 1.0  # the residual R - 1 on the last token
    assert torch.allclose(components["first_token"], expected * mask, atol=1e-5)


def word_values(responses: list[str]) -> torch.Tensor:
    """(N, words) value of each visible word (len % 3 - 1), 0 for a hidden one ([UNK]), padded with 0."""
    rows = [[len(w) % 3 - 1.0 if w != "[UNK]" else 0.0 for w in text.split()] for text in responses]
    width = max(map(len, rows))
    return torch.tensor([row + [0.0] * (width - len(row)) for row in rows])


def additive_game(prompts, responses):
    return word_values(responses).sum(1)


def pairwise_game(prompts, responses):
    """Additive plus 0.1 (visible words)^2 = 0.1 sum_i x_i + 0.2 sum_{i<j} x_i x_j: pairwise interactions."""
    visible = torch.tensor(
        [sum(w != "[UNK]" for w in text.split()) for text in responses], dtype=torch.float32
    )
    return additive_game(prompts, responses) + 0.1 * visible**2


def test_the_library_backends_chosen_on_the_command_line_agree_with_the_batched_ones(task_cache):
    """--shap-backend / --lime-backend reach the explainers of every arm; where both estimators are exact
    (SHAP, one antithetic pair: pairwise games; LIME with no ridge: additive games) they agree, to the
    tolerances of test_reward_attribution.py."""
    found = {}
    for backend in ("batched", "library"):
        argv = ["--shap-backend", backend, "--lime-backend", backend, "--cache-dir", task_cache]
        setup = run.build_setup(checks.parse_options(argv))
        assert (setup.attribution.shap_backend, setup.attribution.lime_backend) == (backend, backend)
        setup.attribution = dataclasses.replace(setup.attribution, lime_ridge_alpha=0.0, lime_samples=64)
        enc = setup.tokenizer(setup.task.val_prompts[:4], return_tensors="pt", padding=True)
        pad, eos, config = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id, setup.ppo_config
        generator = torch.Generator().manual_seed(0)
        ids, mask = sampling.sample(
            setup.task.policy, enc["input_ids"], enc["attention_mask"], config, pad, eos, generator=generator
        )
        prompts, pieces = coalitions.response_texts(setup.tokenizer, enc["input_ids"], ids, mask)
        for method, game in [("shap", pairwise_game), ("lime", additive_game)]:
            batch = credit.Responses(prompts, pieces, ids, mask, game)
            found[method, backend] = credit.explanation(method, setup, batch)  # (B, T)
    assert torch.allclose(found["shap", "library"], found["shap", "batched"], atol=1e-5)
    assert torch.allclose(found["lime", "library"], found["lime", "batched"], atol=1e-4)
    assert found["shap", "batched"].abs().sum() > 0
    # The embedded RM itself, explained through its token ids (run.py's default): the library backends
    # show each response by its own width; SHAP's efficiency, sum_t phi_t = f(full) - f(empty), holds.
    assert mask.sum(1).unique().numel() > 1  # responses of several lengths
    lime = credit.explanation("lime", setup, credit.Responses(prompts, pieces, ids, mask, setup.token_reward))
    phi = credit.explanation("shap", setup, credit.Responses(prompts, pieces, ids, mask, setup.token_reward))
    _, real = coalitions.real_tokens(pieces)  # (B, T)
    owner = torch.arange(len(pieces)).repeat(2)  # (2B,)
    visible = torch.cat([real, torch.zeros_like(real)])  # (2B, T) full, then empty
    game = prompts, pieces, owner, visible, setup.token_reward, setup.attribution
    full, empty = coalitions.score_coalitions(*game)[0].view(2, -1)  # (B,) each
    assert torch.allclose(phi.sum(1).double(), full - empty, atol=1e-4)
    assert lime.shape == phi.shape and not lime[~mask.bool()].any()


def test_oracle_components_are_the_truth_completed_to_sum_to_the_reward(task_cache):
    setup = run.build_setup(checks.parse_options(["--cache-dir", task_cache]))
    prompts = setup.task.val_prompts[:8]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    policy, config = setup.task.policy, setup.ppo_config
    ids, mask = sampling.sample(policy, enc["input_ids"], enc["attention_mask"], config, pad, eos)  # (B, T)
    components, scores = run.reward_components(
        setup, enc["input_ids"], ids, mask, ["true_shapley", "lexicon"]
    )
    for i, n in enumerate(mask.sum(1).tolist()):
        words = setup.tokenizer.convert_ids_to_tokens(ids[i, :n].tolist())
        for name, truth in [
            ("true_shapley", language.true_shapley_credit),
            ("lexicon", language.true_token_credit),
        ]:
            expected = torch.tensor(truth(prompts[i], words), dtype=torch.float32)
            expected[-1] += scores[i] - expected.sum()  # the residual R - sum of the truth, on the last token
            assert torch.allclose(components[name][i, :n], expected, atol=1e-5)
            assert components[name][i].sum() == pytest.approx(scores[i].item(), abs=1e-4)
            assert not components[name][i, n:].any()
