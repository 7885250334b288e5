"""Tests for integrations/verl_dense_credit.py on verl's own records: responses of the embedded policy laid
out by verl's rollout code (AgentLoopWorker._pad_token_ids), the manager loaded by verl's own loader, its
sparse rows against verl's two NaiveRewardManagers, its SHAP rows against this project's SHAP credit."""

import os
from types import SimpleNamespace

import pytest

pytest.importorskip("verl", reason="verl is not installed (CI's .venv-verl step runs this file)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker  # noqa: E402
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls  # noqa: E402
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager as LoopNaive  # noqa: E402
from verl.trainer.ppo.reward import load_reward_manager  # noqa: E402
from verl.utils.model import compute_position_id_with_mask  # noqa: E402
from verl.workers import reward_manager as batch_api  # noqa: E402

import reward_attribution  # noqa: E402
import scoring  # noqa: E402
import shaping  # noqa: E402
import task  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "integrations", "verl_dense_credit.py")
SMALL = dict(n_reviews=2000, n_train_prompts=16, n_val_prompts=4, rm_steps=30, sft_steps=60, sft_runs=1)
PROMPT_LENGTH, RESPONSE_LENGTH = 6, 10  # verl's rollout.prompt_length, rollout.response_length
BO_PICK = {"shap": 0.17, "lime": 0.83}  # the default run's BO weights (docs/summary.md)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small embedded task, 8 of its policy's responses (some cut at RESPONSE_LENGTH without EOS) as
    token lists, and the DataProto verl's rollout makes of them."""
    torch.set_num_threads(1)
    config = task.TaskConfig(cache_dir=str(tmp_path_factory.mktemp("task")), **SMALL)
    the_task = task.build_task(config)
    tokenizer = the_task.policy_tokenizer
    prompts = the_task.train_prompts[:8]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    drawn = the_task.policy.generate(**encoded, do_sample=True, max_new_tokens=RESPONSE_LENGTH, **ids)
    prompt_rows = [
        row[mask.bool()].tolist() for row, mask in zip(encoded["input_ids"], encoded["attention_mask"])
    ]
    responses = []
    for row in drawn[:, encoded["input_ids"].shape[1] :].tolist():  # up to and including the first EOS
        responses.append(
            row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row
        )
    lengths = sorted(map(len, responses))
    assert lengths[0] < RESPONSE_LENGTH == lengths[-1], f"expected padded and capped responses; got {lengths}"
    worker = SimpleNamespace(tokenizer=tokenizer)  # all that verl's padding method reads

    def pad(ids, **how):
        return AgentLoopWorker._pad_token_ids(worker, ids, return_attention_mask=True, **how)

    tensors = {"prompts": [], "responses": [], "attention_mask": []}
    for prompt, response in zip(prompt_rows, responses):  # as AgentLoopWorker._agent_loop_postprocess
        left = pad(prompt, max_length=PROMPT_LENGTH, padding_side="left")
        right = pad(response, max_length=RESPONSE_LENGTH, padding_side="right")
        tensors["prompts"].append(left["input_ids"])
        tensors["responses"].append(right["input_ids"])
        tensors["attention_mask"].append(torch.cat([left["attention_mask"], right["attention_mask"]], 1))
    tokenizer.padding_side = "left"  # as the task loaded it (verl's padding method sets it)
    tensors = {name: torch.cat(rows) for name, rows in tensors.items()}  # (B, P), (B, T), (B, P + T)
    tensors["input_ids"] = torch.cat([tensors["prompts"], tensors["responses"]], 1)
    tensors["position_ids"] = compute_position_id_with_mask(tensors["attention_mask"])
    tensors["response_mask"] = tensors["attention_mask"][:, PROMPT_LENGTH:]
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in prompt_rows]
    non_tensors = {
        "data_source": np.array(["embedded"] * len(prompts), dtype=object),
        "reward_model": np.array([{"ground_truth": None}] * len(prompts), dtype=object),
        "extra_info": np.array([{"prompt": text} for text in texts], dtype=object),
    }
    data = DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)
    model_path = os.path.join(task.cache_folder(config), "reward_model")
    return SimpleNamespace(
        task=the_task, prompts=prompt_rows, responses=responses, data=data, path=model_path
    )


def verl_config(setup, weights, **more) -> OmegaConf:
    """The lines of a verl run that pick the manager (docs/verl.md), as the config verl's loader reads."""
    settings = {"model_path": setup.path, "weights": weights, "device": "cpu", **more}
    return picked_by(settings)


def picked_by(settings: dict) -> OmegaConf:
    """verl's config with reward.reward_manager naming this manager's file and class, and its settings."""
    chosen = {"source": "importlib", "name": "DenseCreditRewardManager", "module": {"path": MODULE}}
    return OmegaConf.create({"reward": {"reward_manager": chosen, "dense_credit": settings}})


def manager(setup, weights, **more):
    """The manager as verl builds it: load_reward_manager(config, policy tokenizer)."""
    return load_reward_manager(verl_config(setup, weights, **more), setup.task.policy_tokenizer)


def rm_scores(setup) -> torch.Tensor:
    """f(x, y) (B,) of each prompt and response token list, through the RM the task built."""
    tokenizer, scorer = setup.task.policy_tokenizer, scoring.sdpa_view(setup.task.reward_model)
    prompts = [tokenizer.decode(row, skip_special_tokens=True) for row in setup.prompts]
    responses = [" " + tokenizer.decode(row, skip_special_tokens=True) for row in setup.responses]
    return scoring.score(scorer, setup.task.reward_tokenizer, prompts, responses)


def test_rows_sum_to_the_rm_score_and_padding_gets_zero(setup):
    out = manager(setup, BO_PICK)(setup.data, return_dict=True)
    rewards, valid = out["reward_tensor"], setup.data.batch["response_mask"].bool()  # (B, T) each
    scores = rm_scores(setup)
    assert rewards.shape == (len(setup.responses), RESPONSE_LENGTH)
    torch.testing.assert_close(rewards.sum(1), scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(out["reward_extra_info"]["score"]), scores, atol=1e-5, rtol=1e-5)
    assert (rewards[~valid] == 0).all()
    assert (rewards[valid][:-1] != 0).any()  # dense: credit off the last token too


def test_the_id_the_rollout_pads_prompts_with_is_not_read(setup):
    """verl pads with the tokenizer's pad id, or with 0 in places: a real word there must change nothing."""
    word = setup.task.policy_tokenizer.convert_tokens_to_ids("great")
    padding = setup.data.batch["attention_mask"][:, :PROMPT_LENGTH] == 0  # (B, P)
    assert padding.any()
    prompts = setup.data.batch["prompts"].masked_fill(padding, word)
    record = DataProto.from_dict(tensors={**dict(setup.data.batch.items()), "prompts": prompts})
    built = manager(setup, {"attention": 0.5, "sparse": 0.5})
    torch.testing.assert_close(built(record), built(setup.data), atol=1e-6, rtol=1e-6)


def test_sparse_weights_give_verls_naive_layout(setup):
    """verl's batch NaiveRewardManager and its reward loop's (run_single, then assemble_rm_scores), each
    scoring the decoded response with the same RM, put R on the last valid token: so must sparse."""
    tokenizer, scorer = setup.task.policy_tokenizer, scoring.sdpa_view(setup.task.reward_model)

    def compute_score(data_source, solution_str, ground_truth, extra_info, **_):
        texts = [extra_info["prompt"]], [" " + solution_str]
        return scoring.score(scorer, setup.task.reward_tokenizer, *texts).item()

    batch_naive = batch_api.NaiveRewardManager(tokenizer, num_examine=0, compute_score=compute_score)
    loop_naive = LoopNaive(verl_config(setup, BO_PICK), tokenizer, compute_score)
    rows = [
        loop_naive.loop.run_until_complete(loop_naive.run_single(setup.data[i : i + 1]))["reward_score"]
        for i in range(8)
    ]
    ours = manager(setup, {"sparse": 1.0})(setup.data)
    torch.testing.assert_close(ours, batch_naive(setup.data), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, LoopNaive.assemble_rm_scores(setup.data, rows), atol=1e-5, rtol=1e-5)


def test_shap_weights_give_this_projects_shap_credit(setup):
    """The same responses as the stages take them (left-padded prompts, right-padded responses of their own
    longest length): reward_attribution.attribute, then shaping, with the same mask string and seed."""
    tokenizer, T = setup.task.policy_tokenizer, max(map(len, setup.responses))
    prompts = tokenizer.pad({"input_ids": setup.prompts}, padding_side="left", return_tensors="pt")
    prompt_ids = prompts["input_ids"]  # (B, longest prompt)
    response_ids = torch.tensor([row + [tokenizer.pad_token_id] * (T - len(row)) for row in setup.responses])
    response_mask = (torch.arange(T) < torch.tensor([len(row) for row in setup.responses])[:, None]).long()
    scorer, rm_tokenizer = scoring.sdpa_view(setup.task.reward_model), setup.task.reward_tokenizer

    def reward_fn(prompts, responses):
        return scoring.score(scorer, rm_tokenizer, prompts, responses)

    config = reward_attribution.AttributionConfig("[UNK]", shap_permutations=4, seed=3)
    tokens = (tokenizer, prompt_ids, response_ids, response_mask)
    phi, _ = reward_attribution.attribute("shap", *tokens, reward_fn, config)  # (B, T)
    expected = shaping.credit_components(rm_scores(setup), response_mask, {"shap": phi})["shap"]  # (B, T)
    ours = manager(setup, {"shap": 1.0}, shap_permutations=4, seed=3)(setup.data)  # (B, RESPONSE_LENGTH)
    torch.testing.assert_close(ours[:, :T], expected, atol=1e-4, rtol=1e-4)
    assert (ours[:, T:] == 0).all()


def test_reward_loop_rows_match_the_batch_call_and_both_registries_name_it(setup):
    """verl's reward loop hands one response at a time: run_single's rows, stacked by assemble_rm_scores,
    are the batch call's (deterministic components: attention, uniform, sparse)."""
    weights = {"attention": 0.5, "uniform": 0.3, "sparse": 0.2}
    built = manager(setup, weights)
    rows = [
        built.loop.run_until_complete(built.run_single(setup.data[i : i + 1]))["reward_score"]
        for i in range(8)
    ]
    torch.testing.assert_close(
        type(built).assemble_rm_scores(setup.data, rows), built(setup.data), atol=1e-5, rtol=1e-5
    )
    assert get_reward_manager_cls("dense_credit").__name__ == "DenseCreditRewardManager"
    assert batch_api.get_reward_manager_cls("dense_credit").__name__ == "DenseCreditRewardManager"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"weights": {"sparse": 1.0}}, "expected model_path and weights"),
        ({"model_path": "x", "weights": {"shap": 0.5, "sparse": 0.6}}, "not on the simplex"),
        ({"model_path": "x", "weights": {"lexicon": 1.0}}, "expected components among"),
        (
            {"model_path": "x", "weights": {"sparse": 1.0}, "temperature": 1},
            "expected model_path and weights",
        ),
    ],
)
def test_bad_settings_fail_in_one_line_before_the_rm_loads(setup, settings, message):
    with pytest.raises(ValueError, match=message):
        load_reward_manager(picked_by(settings), setup.task.policy_tokenizer)


def test_a_record_without_responses_fails_in_one_line(setup):
    record = DataProto.from_dict(tensors={"prompts": setup.data.batch["prompts"]})
    with pytest.raises(ValueError, match=r"the batch has no \['responses', 'attention_mask'\]"):
        manager(setup, {"sparse": 1.0})(record)
