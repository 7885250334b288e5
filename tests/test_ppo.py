"""Tests for ppo.py: hand-worked GAE, masking, log-prob recomputation, generation, learning."""

import copy

import numpy as np
import pytest
import torch
from test_sampling import EOS, PAD, PROMPTS, left_pad, tiny_gpt2, uniform_model
from transformers import GPT2LMHeadModel

import estimators
import ppo

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_sparse_score_lands_on_last_real_token():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    rewards = estimators.sparse_token_rewards(torch.tensor([2.0, -3.0, 0.5]), mask)
    assert torch.equal(rewards, torch.tensor([[0, 0, 2.0, 0, 0], [0, 0, 0, 0, -3.0], [0.5, 0, 0, 0, 0]]))
    # Sampled responses that stop at EOS (and ones cut at max_new_tokens).
    trainer = ppo.PPOTrainer(
        uniform_model(), ppo.PPOConfig(max_new_tokens=6, min_new_tokens=1, device="cpu"), PAD, EOS
    )
    response_ids, mask = trainer.generate(*left_pad(PROMPTS * 10))
    scores = torch.arange(1, 31, dtype=torch.float32)
    rewards = estimators.sparse_token_rewards(scores, mask)
    last = mask.sum(1) - 1
    assert torch.equal(rewards[torch.arange(30), last], scores)
    assert torch.equal(rewards.sum(1), scores) and (rewards[mask == 0] == 0).all()
    stopped = last < 5
    assert stopped.any() and (response_ids[stopped, last[stopped]] == EOS).all()
    with pytest.raises(ValueError, match="scores of shape"):
        estimators.sparse_token_rewards(torch.ones(3), mask)


def test_first_ratio_is_one_and_adaptive_kl_controller():
    policy = tiny_gpt2()
    policy.train()  # dropout on: the trainer must switch it off
    config = ppo.PPOConfig(
        minibatch_size=4, temperature=0.7, max_new_tokens=6, target_kl=0.01, kl_horizon=100, device="cpu"
    )
    trainer = ppo.PPOTrainer(policy, config, PAD, EOS)
    prompt_ids, prompt_mask = left_pad(PROMPTS * 4)
    first = trainer.rollout(prompt_ids, prompt_mask)
    torch.testing.assert_close(first.logprobs, first.ref_logprobs)  # reference = initial policy
    rewards = estimators.sparse_token_rewards(torch.randn(12), first.response_mask)
    stats = trainer.update(first, rewards)
    assert stats["first_ratio_error"] < 1e-6 and stats["kl"] == 0.0
    assert stats["approx_kl"] > 0  # later minibatches did move the policy
    # Next iteration: KL > 0 now; beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * B / horizon.
    stats = trainer.update(trainer.rollout(prompt_ids, prompt_mask), rewards * 0)
    error = float(np.clip(stats["kl"] / 0.01 - 1, -0.2, 0.2))
    assert stats["first_ratio_error"] < 1e-6 and stats["kl"] != 0
    assert trainer.kl_coef == pytest.approx(stats["kl_coef"] * (1 + error * 12 / 100))
    with pytest.raises(ValueError, match="token_rewards of shape"):
        trainer.update(first, rewards[:, :2])


def test_rollout_and_update_create_tensors_on_the_input_device():
    """Catches a tensor that sampling, rollout, rewards, GAE or the update creates without the
    device of its inputs (say `torch.zeros(B)` without `device=`): on a GPU it lands on the CPU
    and the first op that meets a GPU tensor fails. Here the default device is 'meta' while the
    models and inputs stay on the CPU, so such a tensor lands on 'meta' and fails the same way.
    The trainer is built outside, as it is on a GPU before any training step."""
    config = ppo.PPOConfig(minibatch_size=3, min_new_tokens=2, max_new_tokens=5, device="cpu")
    trainer = ppo.PPOTrainer(tiny_gpt2(), config, PAD, EOS)
    prompt_ids, prompt_mask = left_pad(PROMPTS * 2)
    with torch.device("meta"):
        rollout = trainer.rollout(prompt_ids, prompt_mask)
        scores = rollout.response_mask.sum(1).float()
        stats = trainer.update(
            rollout, estimators.sparse_token_rewards(scores, rollout.response_mask), scores
        )
        response_ids, _ = trainer.generate(prompt_ids, prompt_mask)
    assert rollout.values.device.type == "cpu" and response_ids.device.type == "cpu"
    assert all(np.isfinite(value) for value in stats.values())


def train_token_counter(model_dir, seed, iterations=20):
    """PPO on 'reward +1 per occurrence of token 5'; returns the per-iteration stats."""
    config = ppo.PPOConfig(
        minibatch_size=16, learning_rate=1e-3, min_new_tokens=6, max_new_tokens=6, device="cpu", seed=seed
    )
    trainer = ppo.PPOTrainer(GPT2LMHeadModel.from_pretrained(model_dir), config, PAD, EOS)
    prompt_ids, prompt_mask = left_pad(PROMPTS * 11)
    history = []
    for _ in range(iterations):
        rollout = trainer.rollout(prompt_ids[:32], prompt_mask[:32])
        token_rewards = (rollout.response_ids == 5).float() * rollout.response_mask
        stats = trainer.update(rollout, token_rewards, scores=token_rewards.sum(1))
        history.append({k: v for k, v in stats.items() if not k.startswith("time")})
    return history


def test_learning_rises_and_is_reproducible(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)
    history = train_token_counter(tmp_path, seed=3)
    scores = [h["score"] for h in history]
    assert np.mean(scores[:3]) < 1.5  # ~6 tokens * 1/12 at the start
    assert np.mean(scores[-3:]) > np.mean(scores[:3]) + 1.5
    assert train_token_counter(tmp_path, seed=3) == history


def test_a_shared_reference_stays_trainable_for_the_next_run():
    """run.py passes the SFT model as every run's reference and deep-copies it as the next
    policy: the trainer must not freeze it, or every later run silently never learns."""
    sft = tiny_gpt2()
    config = ppo.PPOConfig(minibatch_size=4, max_new_tokens=4, device="cpu")
    ppo.PPOTrainer(copy.deepcopy(sft), config, PAD, EOS, ref_policy=sft)
    assert all(p.requires_grad for p in sft.parameters())
    second = ppo.PPOTrainer(copy.deepcopy(sft), config, PAD, EOS, ref_policy=sft)
    before = [p.detach().clone() for p in second.policy.parameters()]
    rollout = second.rollout(*left_pad(PROMPTS[:2] * 2))
    second.update(
        rollout, estimators.sparse_token_rewards(torch.tensor([1.0, -1.0, 1.0, -1.0]), rollout.response_mask)
    )
    assert any(not torch.equal(a, b) for a, b in zip(before, second.policy.parameters()))


# Two responses to each of two prompts (G = 2), lengths 3, 2, 1, 3; 7s sit on pads.
def test_a_critic_free_trainer_has_no_value_head_and_answers_each_prompt_g_times():
    config = ppo.PPOConfig(advantage="group", group_size=3, minibatch_size=3, max_new_tokens=5, device="cpu")
    policy = tiny_gpt2()
    trainer = ppo.PPOTrainer(policy, config, PAD, EOS)
    assert trainer.value_head is None
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in policy.parameters()}  # the policy's weights and nothing else
    prompt_ids, prompt_mask = left_pad(PROMPTS[:2])
    rollout = trainer.rollout(prompt_ids, prompt_mask)
    assert rollout.values is None
    expected = prompt_ids.repeat_interleave(3, dim=0)  # rows 0-2 answer prompt 0, rows 3-5 prompt 1
    assert torch.equal(rollout.prompt_ids, expected)
    scores = torch.arange(6.0)
    stats = trainer.update(rollout, estimators.sparse_token_rewards(scores, rollout.response_mask), scores)
    assert "value_loss" not in stats and "explained_variance" not in stats
    assert stats["first_ratio_error"] < 1e-6


def test_minibatch_of_one_takes_batch_times_epochs_optimizer_steps():
    config = ppo.PPOConfig(minibatch_size=1, ppo_epochs=2, max_new_tokens=4, device="cpu")
    trainer = ppo.PPOTrainer(tiny_gpt2(), config, PAD, EOS)
    steps = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda: steps.append(step())
    rollout = trainer.rollout(*left_pad(PROMPTS * 2))  # B = 6
    trainer.update(rollout, estimators.sparse_token_rewards(torch.ones(6), rollout.response_mask))
    assert len(steps) == 6 * 2


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(advantage="vtrace"), "advantage='vtrace'"),
        (dict(advantage="group", group_size=1), "a prompt alone in its group"),
        (dict(group_size=0), "group_size=0"),
        (dict(lam=1.5), "lam=1.5"),
        (dict(device="tpu"), "device='tpu'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError, match=message):
        ppo.PPOConfig(**settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_naming_what_torch_reports():
    reported = "CPU-only build" if torch.version.cuda is None else "sees 0 CUDA device"
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=reported):
            ppo.PPOConfig(device=device)
    with pytest.raises(ValueError, match="bf16=True needs a cuda device"):
        ppo.PPOConfig(bf16=True)
