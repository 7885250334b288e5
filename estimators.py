"""What PPO computes from a rollout, before and for its update (the stage ppo.py uses):

    rewards     r_t - kl_coef KL_t, KL_t per token by k1 or k3 (Schulman 2020)
    advantages  GAE on a value head (Schulman et al. 2016), or critic-free from the
                reward-to-go: RLOO's leave-one-out baseline (Ahmadian et al. 2024) or
                REINFORCE++'s batch whitening (Hu 2025)
    losses      the clipped surrogate and the clipped value loss (Schulman et al. 2017)

Shapes: B responses, T longest response (right-padded), G responses per prompt.
`response_mask (B, T)` is 1 on real tokens up to and including EOS; every per-token
tensor is zero outside it.
"""

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the positions where mask is 1: sum(x * m) / sum(m)."""
    return (x * mask).sum() / mask.sum()


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of x over the positions where mask is 1."""
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mu) / sqrt(var + 1e-8) with mu, var over the real positions only; 0 elsewhere."""
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + 1e-8) * mask


def sparse_token_rewards(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """r_t = R [t == T_i]: each sequence score on its response's last real token (never a pad).

    Standard RLHF's reward, here so that ppo.py copied alone trains on a sequence-level RM.
    """
    if scores.shape != response_mask.shape[:1]:
        raise ValueError(
            f"scores of shape {tuple(scores.shape)} do not match "
            f"response_mask of shape {tuple(response_mask.shape)}: expected (B,)"
        )
    last = response_mask.sum(dim=1).long() - 1  # (B,)
    if (last < 0).any():
        raise ValueError("a response has no real token: response_mask has an all-zero row")
    rewards = torch.zeros(response_mask.shape, dtype=torch.float32, device=response_mask.device)
    rewards[torch.arange(len(last), device=last.device), last] = scores.float()
    return rewards


def kl_per_token(logprobs, ref_logprobs, response_mask, estimator: str) -> torch.Tensor:
    """Per-token KL of the policy to the reference under the sampling distribution (Schulman 2020):

        k1 = log(pi / pi_ref)              unbiased, can be negative
        k3 = (rho - 1) - log(rho),  rho = pi_ref / pi      unbiased, >= 0

    logprobs, ref_logprobs, response_mask (B, T) -> (B, T), zero outside the mask.
    """
    log_ratio = (logprobs - ref_logprobs) * response_mask  # (B, T) log(pi / pi_ref)
    if estimator == "k1":
        return log_ratio
    return ((-log_ratio).exp() - 1 + log_ratio) * response_mask  # (B, T)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), one reverse scan over T.

        delta_t = r_t + gamma V_{t+1} - V_t
        A_t     = delta_t + gamma lam A_{t+1}
        returns = A_t + V_t

    The episode ends at the last real token (EOS or max_new_tokens): V and A after it are 0.
    Pads carry r = V = 0, so they add nothing. Returns (advantages, returns), both (B, T).
    """
    rewards, values = rewards * response_mask, values * response_mask
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    advantages = []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        next_value = values[:, t]
        advantages.append(next_advantage)
    advantages = torch.stack(advantages[::-1], dim=1) * response_mask  # (B, T)
    return advantages, advantages + values


def reward_to_go(rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma G_{t+1}: what token t and the tokens after it earned, (B, T).

    REINFORCE with "causality" (Williams 1992): a token is not credited with the rewards of the
    tokens before it. With a sparse reward R and gamma = 1, G_t = R at every real token.
    """
    rewards = rewards * response_mask
    next_return = torch.zeros_like(rewards[:, 0])  # (B,)
    returns = []
    for t in reversed(range(rewards.shape[1])):
        next_return = rewards[:, t] + gamma * next_return
        returns.append(next_return)
    return torch.stack(returns[::-1], dim=1) * response_mask  # (B, T)


def leave_one_out(returns: torch.Tensor, response_mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_t = G_t - mean_{j != i} G^j_0: the reward-to-go minus the mean return of the other
    responses to the same prompt (RLOO's baseline, Ahmadian et al. 2024), (B, T).

    Rows i*G .. i*G + G-1 answer one prompt (rollout repeats each prompt G times in a row).
    With a sparse reward every token of response i gets R_i - mean_{j != i} R_j, RLOO's (and
    verl's) outcome advantage. Not divided by the group's std as GRPO does (Shao et al. 2024):
    that weights the prompts whose responses agree most (Liu et al. 2025, "Dr. GRPO"); the
    batch-wide whitening of PPOConfig.whiten_advantages sets the scale instead.
    """
    totals = returns[:, 0].view(-1, group_size)  # (B/G, G), G^j_0 = each response's return
    baseline = (totals.sum(dim=1, keepdim=True) - totals) / (group_size - 1)  # (B/G, G)
    return (returns - baseline.reshape(-1, 1)) * response_mask  # (B, T)


def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range: float):
    """PPO's clipped surrogate (Schulman et al. 2017), as a loss to minimise:

        L = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps)),  rho_t = pi / pi_old

    Returns (L, rho, log rho); rho (b, T) is 1 and log rho 0 outside the mask.
    """
    log_ratio = (logprobs - old_logprobs) * mask  # (b, T) log rho
    ratio = log_ratio.exp()  # (b, T) rho
    clipped_ratio = ratio.clamp(1 - clip_range, 1 + clip_range)
    surrogate = torch.max(-advantages * ratio, -advantages * clipped_ratio)  # (b, T)
    return masked_mean(surrogate, mask), ratio, log_ratio


def clipped_value_loss(values, old_values, returns, response_mask, clip_range_value: float) -> torch.Tensor:
    """0.5 max((V - G)^2, (V_clip - G)^2), V_clip = V_old + clip(V - V_old, +-eps) (37 details, 9)."""
    values_clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
    squared = torch.max((values - returns) ** 2, (values_clipped - returns) ** 2)  # (B, T)
    return 0.5 * masked_mean(squared, response_mask)


def estimate_advantages(
    config, rewards: torch.Tensor, values: torch.Tensor | None, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """config.advantage's estimator -> (advantages, returns of the value loss), each (B, T).

        gae          GAE(gamma, lam) on the value head V (Schulman et al. 2016)
        group        G_t - mean_{j != i} G^j_0           critic-free, RLOO's baseline
        reinforce++  (G_t - mean G) / std G over the batch's real tokens  (Hu 2025, as verl and
                     OpenRLHF compute it; critic-free)

    GAE's and the group's advantages are whitened the same way when config.whiten_advantages
    (37 details, detail 7). The critic-free estimators return no returns: no value loss.
    """
    if config.advantage == "gae":
        advantages, returns = gae(rewards, values, response_mask, config.gamma, config.lam)
    else:
        advantages, returns = reward_to_go(rewards, response_mask, config.gamma), None
        if config.advantage == "group":
            advantages = leave_one_out(advantages, response_mask, config.group_size)
    if config.whiten_advantages or config.advantage == "reinforce++":
        advantages = masked_whiten(advantages, response_mask)
    return advantages, returns
