"""Tests for estimators.py: hand-worked GAE, reward-to-go, RLOO and REINFORCE++ advantages, masking."""

import numpy as np
import pytest
import torch

import estimators
import ppo


def test_gae_hand_worked_with_masking():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, -1.0, 7.0]])  # 7 and 9 sit on a pad
    values = torch.tensor([[0.5, 0.2, 0.4], [0.3, -0.2, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages, returns = estimators.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # Row 0: delta = (-0.32, 0.16, 0.6); A2 = 0.6, A1 = 0.16 + 0.45 * 0.6, A0 = -0.32 + 0.45 * 0.43.
    # Row 1 ends at t=1 (V after it is 0): delta = (0.02, -0.8); A0 = 0.02 + 0.45 * (-0.8).
    torch.testing.assert_close(advantages, torch.tensor([[-0.1265, 0.43, 0.6], [-0.34, -0.8, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.3735, 0.63, 1.0], [-0.04, -1.0, 0.0]]))
    # gamma = lam = 1: the return is the Monte-Carlo reward-to-go, whatever the values.
    _, returns = estimators.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0], [-0.5, -1.0, 0.0]]))


def test_masked_whiten_ignores_pads():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, -50.0, -50.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    real = np.array([1.0, 2.0, 3.0, 4.0])
    expected = (real - real.mean()) / np.sqrt(real.var() + 1e-8)
    whitened = estimators.masked_whiten(x, mask)
    np.testing.assert_allclose(whitened[mask.bool()].numpy(), expected, atol=1e-6)
    assert (whitened[mask == 0] == 0).all()
    torch.testing.assert_close(estimators.masked_whiten(x * mask, mask), whitened)
    assert estimators.masked_mean(x, mask).item() == pytest.approx(2.5)


GROUP_REWARDS = torch.tensor([[0.5, 0.0, 1.0], [2.0, -1.0, 7.0], [3.0, 7.0, 7.0], [0.0, 0.0, -2.0]])


GROUP_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def test_reward_to_go_and_leave_one_out_hand_worked():
    to_go = estimators.reward_to_go(GROUP_REWARDS, GROUP_MASK, gamma=1.0)
    expected = torch.tensor([[1.5, 1.0, 1.0], [1.0, -1.0, 0.0], [3.0, 0.0, 0.0], [-2.0, -2.0, -2.0]])
    torch.testing.assert_close(to_go, expected)
    # gamma = 0.5, row 0: G2 = 1, G1 = 0 + 0.5, G0 = 0.5 + 0.25.
    torch.testing.assert_close(
        estimators.reward_to_go(GROUP_REWARDS, GROUP_MASK, 0.5)[0], torch.tensor([0.75, 0.5, 1])
    )
    # Returns 1.5, 1.0 | 3.0, -2.0: each response's baseline is the other one's return.
    advantages = estimators.leave_one_out(to_go, GROUP_MASK, group_size=2)
    expected = torch.tensor([[0.5, 0.0, 0.0], [-0.5, -2.5, 0.0], [5.0, 0.0, 0.0], [-5.0, -5.0, -5.0]])
    torch.testing.assert_close(advantages, expected)


def test_group_estimator_gives_sparse_credit_rloos_outcome_advantage():
    scores = torch.tensor([1.0, 4.0, -2.0, 0.5, 3.0, 3.0])  # two prompts, G = 3
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    rewards = estimators.sparse_token_rewards(scores, mask)
    config = ppo.PPOConfig(advantage="group", group_size=3, whiten_advantages=False, device="cpu")
    advantages, returns = estimators.estimate_advantages(config, rewards, None, mask.float())
    groups = scores.view(2, 3)
    rloo = groups - (groups.sum(1, keepdim=True) - groups) / 2  # R_i - mean_{j != i} R_j
    verl = (groups - groups.mean(1, keepdim=True)) * 3 / 2  # verl's RLOO: G/(G-1) (R_i - mean_j R_j)
    torch.testing.assert_close(rloo, verl)
    torch.testing.assert_close(advantages, rloo.reshape(-1, 1) * mask)
    assert returns is None  # critic-free: no value loss


def test_reinforce_pp_whitens_the_return_over_the_batch():
    scores = torch.tensor([1.0, 4.0, -2.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]]).float()
    rewards = estimators.sparse_token_rewards(scores, mask)
    config = ppo.PPOConfig(advantage="reinforce++", whiten_advantages=False, device="cpu")
    advantages, _ = estimators.estimate_advantages(config, rewards, None, mask)
    # Sparse credit: the reward-to-go of every real token is the response's return R.
    torch.testing.assert_close(estimators.reward_to_go(rewards, mask, 1.0), scores[:, None] * mask)
    real = np.array([1.0, 1.0, 4.0, 4.0, 4.0, -2.0])  # R over the 6 real tokens
    expected = (real - real.mean()) / np.sqrt(real.var() + 1e-8)
    np.testing.assert_allclose(advantages[mask.bool()].numpy(), expected, atol=1e-6)
    # Dense credit is no longer summed: a token is credited only with what came after it.
    dense = torch.tensor([[3.0, -2.0, 0.0], [1.0, 1.0, 2.0], [-2.0, 0.0, 0.0]])
    torch.testing.assert_close(
        estimators.reward_to_go(dense, mask, 1.0)[:, 1], torch.tensor([-2.0, 3.0, 0.0])
    )
