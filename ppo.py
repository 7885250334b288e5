"""PPO for language models, driven by per-token rewards.

Top to bottom, in the spirit of CleanRL's ppo.py, adapted to causal LMs. The sampler and the
log-probs of what it drew are in sampling.py, the KL penalty, the advantage estimators and the
clipped losses in estimators.py: copy the three files together.

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
from estimators import (
    clipped_policy_loss,
    clipped_value_loss,
    estimate_advantages,
    kl_per_token,
    masked_mean,
    masked_var,
)

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
