"""PPO for language models, driven by per-token rewards.

Top to bottom, in the spirit of CleanRL's ppo.py, adapted to causal LMs (the sampler and the
log-probs of what it drew are in sampling.py: copy the two files together):

    1. rollout     sample G responses per prompt (KV-cached loop), then recompute their
                   log-probs under the policy and a frozen reference, and the values
    2. rewards     the caller's per-token rewards (B, T) minus a per-token KL penalty
    3. advantages  GAE on a value head, or critic-free from the reward-to-go (a group
                   baseline, or REINFORCE++), over masked, variable-length responses
    4. update      several epochs of clipped PPO over shuffled minibatches

References:
- Schulman et al. 2017, PPO, https://arxiv.org/abs/1707.06347 (clipped objective).
- Schulman et al. 2016, GAE, https://arxiv.org/abs/1506.02438 (advantages).
- Ziegler et al. 2019, https://arxiv.org/abs/1909.08593 (per-token KL penalty, adaptive KL).
- Huang et al. 2022, "The 37 Implementation Details of PPO",
  https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/ (numbered details),
  and "The N Implementation Details of RLHF with PPO", https://arxiv.org/abs/2403.17031.
- Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html (k1, k3).
- Ahmadian et al. 2024, RLOO, https://arxiv.org/abs/2402.14740 (leave-one-out baseline);
  Hu 2025, REINFORCE++, https://arxiv.org/abs/2501.03262 (batch-whitened reward-to-go).

Shapes: B responses, P prompt length (left-padded), T longest response (right-padded),
H hidden size, V vocabulary.
`response_mask (B, T)` is 1 on real response tokens up to and including EOS; every per-token
tensor is zero outside it.
"""

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

import sampling

ADVANTAGES = ("gae", "group", "reinforce++")


@dataclass
class PPOConfig:
    """Every PPO setting; run.py makes each field a --flag, with its docstring as the help."""

    advantage: str = "gae"
    """advantage estimator: 'gae' (a value head), 'group' (leave-one-out) or 'reinforce++' (critic-free)"""
    group_size: int = 1
    """responses sampled per prompt (G); 'group' needs G >= 2"""
    lam: float = 0.95
    """GAE lambda (Schulman et al. 2016); 1: the return minus the value"""
    gamma: float = 1.0
    """discount; 1 keeps every return equal to the undiscounted sum of rewards"""
    whiten_advantages: bool = True
    """normalise the advantages over the batch's real tokens (REINFORCE++ always does)"""
    minibatch_size: int = 16
    """responses per gradient step"""
    ppo_epochs: int = 4
    """passes over the batch per iteration"""
    learning_rate: float = 2e-4
    """AdamW learning rate of the policy and its value head"""
    clip_range: float = 0.2
    """PPO ratio clip epsilon (Schulman et al. 2017)"""
    clip_range_value: float = 0.2
    """how far a value may move from the old one before its loss is clipped"""
    vf_coef: float = 0.1
    """weight of the value loss in the joint loss (GAE only)"""
    entropy_coef: float = 0.0
    """weight of the entropy bonus (0: entropy is only logged)"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    kl_coef: float = 0.05
    """(initial) coefficient of the per-token KL penalty, and the yardstick of J"""
    kl_estimator: str = "k1"
    """per-token KL of the penalty: 'k1' (log pi - log pi_ref) or 'k3' (Schulman 2020)"""
    target_kl: float | None = None
    """sequence KL the adaptive controller aims at (Ziegler et al. 2019); None: kl_coef fixed"""
    kl_horizon: int = 10000
    """adaptive KL controller horizon, in responses"""
    temperature: float = 1.0
    """of sampling; the log-probs are recomputed at the same temperature"""
    top_k: int = 0
    """sample among the k most likely tokens (0: off)"""
    top_p: float = 1.0
    """nucleus sampling mass (1.0: off)"""
    min_new_tokens: int = 4
    """shortest response: EOS is blocked before it"""
    max_new_tokens: int = 16
    """longest response; a response that reaches it ends without EOS"""
    device: str = "auto"
    """'auto' (cuda if torch sees one, else cpu), 'cpu', 'cuda' or 'cuda:N'"""
    bf16: bool = False
    """bfloat16 autocast for the forward passes (cuda only)"""
    seed: int = 0
    """seeds the value head, sampling and minibatch shuffling"""

    def __post_init__(self):
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator={self.kl_estimator!r}, expected 'k1' or 'k3'")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage={self.advantage!r}, expected one of {ADVANTAGES}")
        if self.group_size < 1 or (self.advantage == "group" and self.group_size < 2):
            raise ValueError(
                f"group_size={self.group_size} with advantage={self.advantage!r}: expected >= 1, "
                "and >= 2 for 'group' (a prompt alone in its group has no baseline)"
            )
        if not 0 <= self.min_new_tokens <= self.max_new_tokens or self.max_new_tokens < 1:
            raise ValueError(
                f"need 0 <= min_new_tokens ({self.min_new_tokens}) <= "
                f"max_new_tokens ({self.max_new_tokens}), max_new_tokens >= 1"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}, expected > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}, expected in (0, 1]")
        if self.top_k < 0 or self.minibatch_size < 1 or self.ppo_epochs < 1:
            raise ValueError(
                f"top_k={self.top_k}, minibatch_size={self.minibatch_size}, "
                f"ppo_epochs={self.ppo_epochs}: expected >= 0, >= 1, >= 1"
            )
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"target_kl={self.target_kl}, expected > 0 or None")
        if not 0 <= self.lam <= 1 or not 0 < self.gamma <= 1:
            raise ValueError(f"lam={self.lam}, gamma={self.gamma}: expected 0 <= lam <= 1, 0 < gamma <= 1")
        if self.device != "auto":
            check_device(self.device)
        on_cuda = self.device.startswith("cuda") or self.device == "auto" and torch.cuda.is_available()
        if self.bf16 and not on_cuda:
            raise ValueError(f"bf16=True needs a cuda device, got device={self.device!r}")


def check_device(device: str) -> None:
    """Refuse a device torch cannot use, in one line naming what torch reports."""
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if kind.type == "cuda" and torch.version.cuda is None:
        raise ValueError(
            f"device={device!r}: this torch {torch.__version__} is a CPU-only build; install a CUDA "
            "build of torch (pytorch.org) or use device='cpu'"
        )
    if kind.type == "cuda" and (kind.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: torch (CUDA {torch.version.cuda}) sees {torch.cuda.device_count()} "
            "CUDA device(s); check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES, or use device='cpu'"
        )
    if kind.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class Rollout:
    """Everything one iteration sampled, on the trainer's device."""

    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, T) pad after EOS
    response_mask: torch.Tensor  # (B, T) 1 up to and including EOS
    logprobs: torch.Tensor  # (B, T) log pi_old(y_t | x, y_<t)
    ref_logprobs: torch.Tensor  # (B, T) log pi_ref(y_t | x, y_<t)
    values: torch.Tensor | None  # (B, T) V(x, y_<t); None without a critic
    generation_seconds: float  # time spent sampling
    forward_seconds: float  # time spent in the two log-prob forwards


# ---------------------------------------------------------------------------------------
# Masked tensor helpers
# ---------------------------------------------------------------------------------------
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
    config: "PPOConfig", rewards: torch.Tensor, values: torch.Tensor | None, response_mask: torch.Tensor
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


def clock(device: torch.device) -> float:
    """Wall time, after waiting for queued GPU work so phases are timed honestly."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ---------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------
class PPOTrainer:
    """The policy, its frozen reference, the value head, the optimiser, the KL coef."""

    def __init__(self, policy, config: PPOConfig, pad_token_id: int, eos_token_id: int, ref_policy=None):
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(auto if config.device == "auto" else config.device)
        self.config = config
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id
        self.kl_coef = config.kl_coef
        self.drawn_as = sampling.drawn_as(config, eos_token_id)
        # Dropout off: a dropout mask would make pi_old != pi_theta before any
        # update (N implementation details of RLHF, "disable dropout").
        self.policy = policy.to(self.device).eval()
        # Frozen by use, not by flag: it only runs under no_grad in rollout(), so a
        # caller's model passed as the reference (the SFT model, copied again for
        # the next run) stays trainable.
        reference = copy.deepcopy(policy) if ref_policy is None else ref_policy
        self.ref_policy = reference.to(self.device).eval()
        torch.manual_seed(config.seed)
        self.value_head = None  # the critic: GAE only
        if config.advantage == "gae":
            hidden = policy.config.hidden_size
            self.value_head = nn.Linear(hidden, 1).to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        self.parameters = list(self.policy.parameters())
        if self.value_head is not None:
            self.parameters += list(self.value_head.parameters())
        # Adam eps 1e-5 (37 implementation details, detail 3).
        lr = config.learning_rate
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, eps=1e-5, fused=True)

    def autocast(self):
        """bfloat16 autocast when config.bf16 (cuda only), else a no-op."""
        on = self.config.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=on)

    def sample_on_device(self, prompt_ids, prompt_mask, greedy: bool = False):
        """sampling.sample with this trainer's policy and generator."""
        config, pad, eos = self.config, self.pad_token_id, self.eos_token_id
        with self.autocast():
            return sampling.sample(
                self.policy, prompt_ids, prompt_mask, config, pad, eos, greedy, self.generator
            )

    def generate(self, prompt_ids, prompt_mask, greedy: bool = False):
        """Sample (or greedily decode) responses: CPU tensors in and out."""
        prompt_ids = prompt_ids.to(self.device)  # (B, P)
        prompt_mask = prompt_mask.to(self.device)  # (B, P)
        ids, mask = self.sample_on_device(prompt_ids, prompt_mask, greedy)
        return ids.cpu(), mask.cpu()  # (B, T) each

    def logprobs(self, model, tokens: tuple, value_head=None):
        """sampling.response_logprobs of `model` under the sampler's
        temperature and EOS block, in autocast: (B, T) each."""
        with self.autocast():
            return sampling.response_logprobs(model, *tokens, value_head=value_head, **self.drawn_as)

    # 1. rollout
    @torch.no_grad()
    def rollout(self, prompt_ids, prompt_mask) -> Rollout:
        """Sample G = config.group_size responses per prompt (a prompt's G
        rows in a row: B = prompts x G), then the old log-probs and values
        (one forward) and the reference's log-probs."""
        G = self.config.group_size
        prompt_ids = prompt_ids.to(self.device)
        prompt_ids = prompt_ids.repeat_interleave(G, dim=0)  # (B, P)
        prompt_mask = prompt_mask.to(self.device)
        prompt_mask = prompt_mask.repeat_interleave(G, dim=0)  # (B, P)
        start = clock(self.device)
        response_ids, response_mask = self.sample_on_device(prompt_ids, prompt_mask)
        generated = clock(self.device)
        tokens = (prompt_ids, prompt_mask, response_ids, response_mask)
        logprobs, _, values = self.logprobs(self.policy, tokens, self.value_head)
        ref_logprobs, _, _ = self.logprobs(self.ref_policy, tokens)
        forward_seconds = clock(self.device) - generated
        return Rollout(*tokens, logprobs, ref_logprobs, values, generated - start, forward_seconds)

    # 2-4. rewards, advantages, PPO epochs
    def update(
        self, rollout: Rollout, token_rewards: torch.Tensor, scores: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One PPO iteration on a rollout; token_rewards (B, T) from the caller."""
        config = self.config
        mask = rollout.response_mask.float()  # (B, T)
        if token_rewards.shape != mask.shape:
            raise ValueError(
                f"token_rewards of shape {tuple(token_rewards.shape)}, expected "
                f"the response shape {tuple(mask.shape)}"
            )
        token_rewards = token_rewards.to(self.device, torch.float32)
        if (token_rewards * (1 - mask)).abs().max() > 0:
            raise ValueError("token_rewards must be zero outside response_mask (after EOS)")
        start = clock(self.device)
        old_logprobs, ref_logprobs = rollout.logprobs, rollout.ref_logprobs

        # 2. Per-token KL penalty (Ziegler et al. 2019): r_t - kl_coef KL_t.
        kl = kl_per_token(old_logprobs, ref_logprobs, mask, config.kl_estimator)
        rewards = token_rewards - self.kl_coef * kl  # (B, T)

        # 3. Advantages: GAE on the value head, or critic-free.
        advantages, returns = estimate_advantages(config, rewards, rollout.values, mask)  # (B, T) each

        # 4. PPO epochs over shuffled minibatches (37 details, detail 6).
        B = mask.shape[0]
        tokens = (rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
        minibatch_stats, first_ratio_error = [], None
        for _ in range(config.ppo_epochs):
            order = torch.randperm(B, generator=self.generator, device=self.device)
            for first in range(0, B, config.minibatch_size):
                rows = order[first : first + config.minibatch_size]  # (b,)
                mb_mask = mask[rows]  # (b, T)
                mb_tokens = tuple(x[rows] for x in tokens)
                logprobs, entropy, values = self.logprobs(
                    self.policy, mb_tokens, self.value_head
                )  # (b, T) each
                policy_loss, ratio, log_ratio = clipped_policy_loss(
                    logprobs, old_logprobs[rows], advantages[rows], mb_mask, config.clip_range
                )
                mean_entropy = masked_mean(entropy, mb_mask)
                logged = dict(policy_loss=policy_loss, entropy=mean_entropy)
                value_loss = 0.0  # critic-free: no value head to train
                if self.value_head is not None:
                    value_loss = clipped_value_loss(
                        values, rollout.values[rows], returns[rows], mb_mask, config.clip_range_value
                    )
                    logged["value_loss"] = value_loss
                loss = policy_loss + config.vf_coef * value_loss - config.entropy_coef * mean_entropy

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = config.max_grad_norm  # detail 11
                nn.utils.clip_grad_norm_(self.parameters, norm)
                self.optimizer.step()
                with torch.no_grad():
                    off = (ratio - 1).abs() > config.clip_range
                    clip_fraction = masked_mean(off.float(), mb_mask)
                    logged["clip_fraction"] = clip_fraction
                    # k3 of pi_old to pi
                    approx_kl = masked_mean(ratio - 1 - log_ratio, mb_mask)
                    logged["approx_kl"] = approx_kl
                    minibatch_stats.append(logged)
                    if first_ratio_error is None:
                        # Before any step pi == pi_old: 0 up to rounding, else
                        # the log-prob recomputation is inconsistent.
                        error = ((ratio - 1) * mb_mask).abs().max()
                        first_ratio_error = error

        # Adaptive KL controller (Ziegler et al. 2019):
        #   beta *= 1 + clip(KL / target - 1, +-0.2) B / H
        k1 = kl_per_token(old_logprobs, ref_logprobs, mask, "k1")  # (B, T)
        sequence_kl = k1.sum(dim=1).mean().item()
        kl_coef_used = self.kl_coef
        if config.target_kl is not None:
            error = min(max(sequence_kl / config.target_kl - 1, -0.2), 0.2)
            self.kl_coef *= 1 + error * B / config.kl_horizon

        # Statistics: one float each; minibatch ones averaged.
        stats = {
            name: torch.stack([logged[name] for logged in minibatch_stats]).mean().item()
            for name in minibatch_stats[0]
        }
        stats |= {
            "kl": sequence_kl,
            "kl_coef": kl_coef_used,
            # max |pi / pi_old - 1| over the first minibatch
            "first_ratio_error": first_ratio_error.item(),
            "response_length": mask.sum(dim=1).mean().item(),
            "time_generation": rollout.generation_seconds,
            "time_forward": rollout.forward_seconds,
            "time_update": clock(self.device) - start,
        }
        if returns is not None:  # of the value head: 1 - Var(G - V) / Var(G)
            unexplained = masked_var(returns - rollout.values, mask)
            stats["explained_variance"] = (1 - unexplained / masked_var(returns, mask)).item()
        if scores is not None:
            stats["score"] = scores.float().mean().item()
        return stats
