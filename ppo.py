"""PPO for language models, driven by per-token rewards.

One file, top to bottom, in the spirit of CleanRL's ppo.py, adapted to causal LMs:

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
import torch.nn.functional as F

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


# ---------------------------------------------------------------------------------------
# Forward passes: sampling and log-probs
# ---------------------------------------------------------------------------------------
def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """position_ids = cumsum(mask) - 1, clamped at 0: each row's first real token sits at 0."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def response_logprobs(
    model,
    prompt_ids,
    prompt_mask,
    response_ids,
    response_mask,
    temperature=1.0,
    value_head=None,
    eos_token_id=None,
    min_new_tokens=0,
):
    """One forward over [prompt; response] -> log pi(y_t | x, y_<t), entropy, V(x, y_<t).

    The state before response token t sits at position P - 1 + t, so the T states that
    predict the response are hidden[:, P-1 : P+T-1]; the last response token predicts
    nothing and is left out of the input. The log-probs are those of the distribution
    `sample` draws from: logits divided by the temperature, and EOS blocked at the first
    min_new_tokens steps (given eos_token_id). Scored under the unblocked softmax instead,
    the EOS mass the sampler never draws is free to grow: every sampled token's log pi
    falls below the reference's, the k1 KL estimate goes negative and its penalty
    -beta k1 rewards the drift (TRL's training FAQ: "negative KL", min_length).
    Returns (logprobs, entropy, values), each (B, T) and zero outside response_mask;
    values is None without a value head.
    """
    input_ids = torch.cat([prompt_ids, response_ids[:, :-1]], dim=1)  # (B, P+T-1)
    attention_mask = torch.cat([prompt_mask, response_mask[:, :-1]], dim=1)  # (B, P+T-1)
    hidden = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=left_padded_positions(attention_mask)
    ).last_hidden_state
    hidden = hidden[:, prompt_ids.shape[1] - 1 :]  # (B, T, H)
    logits = model.get_output_embeddings()(hidden).float() / temperature  # (B, T, V)
    if eos_token_id is not None:  # a finite floor: its probability is exactly 0, its entropy term 0, not nan
        logits[:, :min_new_tokens, eos_token_id] = torch.finfo(logits.dtype).min
    all_logprobs = F.log_softmax(logits, dim=-1)  # (B, T, V)
    logprobs = all_logprobs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    entropy = -(all_logprobs.exp() * all_logprobs).sum(dim=-1)  # (B, T)
    values = None if value_head is None else value_head(hidden).squeeze(-1).float() * response_mask
    return logprobs * response_mask, entropy * response_mask, values


def drawn_as(config: "PPOConfig", eos_token_id: int) -> dict:
    """response_logprobs' keyword arguments that score tokens as `sample` drew them under config."""
    return dict(
        temperature=config.temperature, eos_token_id=eos_token_id, min_new_tokens=config.min_new_tokens
    )


@torch.no_grad()
def sample(model, prompt_ids, prompt_mask, config, pad_token_id, eos_token_id, greedy=False, generator=None):
    """Autoregressive sampling with a KV cache from left-padded prompts, config a PPOConfig.

    Each step feeds one token with its own position (last position + 1) and the grown
    attention mask. EOS is forbidden before min_new_tokens; after a row's EOS it gets
    pad_token_id. Returns response_ids (B, T) and response_mask (B, T), T <= max_new_tokens.
    PPO scores the tokens under softmax(logits / temperature) with the same EOS block
    (response_logprobs); a top-k/top-p cut it leaves out, as TRL does.
    """
    batch = prompt_ids.shape[0]
    attention_mask = prompt_mask.long()
    positions = left_padded_positions(attention_mask)  # (B, P)
    out = model(input_ids=prompt_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
    next_position = positions[:, -1:] + 1  # (B, 1)
    done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
    tokens, masks = [], []
    for step in range(config.max_new_tokens):
        logits = out.logits[:, -1].float() / config.temperature  # (B, V)
        if step < config.min_new_tokens:
            logits[:, eos_token_id] = -float("inf")
        if greedy:
            token = logits.argmax(dim=-1)
        else:
            probs = F.softmax(filter_top_k_top_p(logits, config.top_k, config.top_p), dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
        masks.append(~done)
        token = token.masked_fill(done, pad_token_id)
        tokens.append(token)
        done = done | (token == eos_token_id)
        if done.all():
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        cache_name = "cache" if "cache" in out else "past_key_values"  # transformers 5.2x renamed it
        out = model(
            input_ids=token[:, None],
            attention_mask=attention_mask,
            position_ids=next_position,
            use_cache=True,
            **{cache_name: out[cache_name]},
        )
        next_position = next_position + 1
    return torch.stack(tokens, dim=1), torch.stack(masks, dim=1).long()


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set of mass >= top_p."""
    if top_k > 0:
        kth_best = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, -float("inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = F.softmax(sorted_logits, dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V)
        remove_sorted = mass_before > top_p  # (B, V)
        remove = torch.empty_like(remove_sorted).scatter_(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, -float("inf"))
    return logits


def clock(device: torch.device) -> float:
    """Wall time, after waiting for queued GPU work so phases are timed honestly."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ---------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------
class PPOTrainer:
    """Holds the policy, its frozen reference, the value head, the optimiser and the KL coef."""

    def __init__(self, policy, config: PPOConfig, pad_token_id: int, eos_token_id: int, ref_policy=None):
        if config.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(config.device)
        self.config, self.pad_token_id, self.eos_token_id = config, pad_token_id, eos_token_id
        self.kl_coef = config.kl_coef
        self.drawn_as = drawn_as(config, eos_token_id)
        # Dropout off: a dropout mask would make pi_old != pi_theta before any update
        # (N implementation details of RLHF, detail "disable dropout").
        self.policy = policy.to(self.device).eval()
        reference = copy.deepcopy(policy) if ref_policy is None else ref_policy
        # Frozen by use, not by flag: it only runs under no_grad in rollout(), so a caller's
        # model passed as the reference (say the SFT model, copied again for the next run)
        # stays trainable.
        self.ref_policy = reference.to(self.device).eval()
        torch.manual_seed(config.seed)
        self.value_head = None  # the critic: GAE only
        if config.advantage == "gae":
            self.value_head = nn.Linear(policy.config.hidden_size, 1).to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        critic = [] if self.value_head is None else list(self.value_head.parameters())
        self.parameters = list(self.policy.parameters()) + critic
        # Adam eps 1e-5 (37 implementation details, detail 3).
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, eps=1e-5, fused=True)

    def autocast(self):
        """bfloat16 autocast when config.bf16 (cuda only), otherwise a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def sample_on_device(self, prompt_ids, prompt_mask, greedy: bool = False):
        """`sample` with this trainer's policy, tokens and generator, on its device."""
        config, pad, eos = self.config, self.pad_token_id, self.eos_token_id
        with self.autocast():
            return sample(self.policy, prompt_ids, prompt_mask, config, pad, eos, greedy, self.generator)

    def generate(self, prompt_ids, prompt_mask, greedy: bool = False):
        """Sample (or greedily decode) responses; CPU tensors in, CPU tensors out."""
        response_ids, response_mask = self.sample_on_device(
            prompt_ids.to(self.device), prompt_mask.to(self.device), greedy
        )
        return response_ids.cpu(), response_mask.cpu()

    # 1. rollout
    @torch.no_grad()
    def rollout(self, prompt_ids, prompt_mask) -> Rollout:
        """Sample config.group_size responses per prompt (a prompt's rows in a row: B = prompts x G),
        then old log-probs + values (one forward) and ref log-probs."""
        group_size = self.config.group_size
        prompt_ids = prompt_ids.to(self.device).repeat_interleave(group_size, dim=0)  # (B, P)
        prompt_mask = prompt_mask.to(self.device).repeat_interleave(group_size, dim=0)  # (B, P)
        start = clock(self.device)
        response_ids, response_mask = self.sample_on_device(prompt_ids, prompt_mask)
        generated = clock(self.device)
        tokens = (prompt_ids, prompt_mask, response_ids, response_mask)
        with self.autocast():
            logprobs, _, values = response_logprobs(
                self.policy, *tokens, value_head=self.value_head, **self.drawn_as
            )
            ref_logprobs, _, _ = response_logprobs(self.ref_policy, *tokens, **self.drawn_as)
        forward_seconds = clock(self.device) - generated
        return Rollout(*tokens, logprobs, ref_logprobs, values, generated - start, forward_seconds)

    # 2-4. rewards, advantages, PPO epochs
    def update(
        self, rollout: Rollout, token_rewards: torch.Tensor, scores: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One PPO iteration on a rollout; token_rewards (B, T) come from the caller."""
        config, mask = self.config, rollout.response_mask.float()
        if token_rewards.shape != mask.shape:
            raise ValueError(
                f"token_rewards of shape {tuple(token_rewards.shape)}, expected "
                f"the response shape {tuple(mask.shape)}"
            )
        token_rewards = token_rewards.to(self.device, torch.float32)
        if (token_rewards * (1 - mask)).abs().max() > 0:
            raise ValueError("token_rewards must be zero outside response_mask (after EOS)")
        start = clock(self.device)

        # 2. Per-token KL penalty (Ziegler et al. 2019): r_t - kl_coef * KL_t, KL_t by k1 or k3.
        kl_penalty = kl_per_token(rollout.logprobs, rollout.ref_logprobs, mask, config.kl_estimator)  # (B, T)
        rewards = token_rewards - self.kl_coef * kl_penalty  # (B, T)

        # 3. Advantages: GAE on the value head, or critic-free from the reward-to-go.
        advantages, returns = estimate_advantages(config, rewards, rollout.values, mask)  # (B, T) each

        # 4. PPO epochs over shuffled minibatches (Schulman et al. 2017; 37 details, detail 6).
        batch_size = mask.shape[0]
        tokens = (rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
        minibatch_stats, first_ratio_error = [], None
        for _ in range(config.ppo_epochs):
            order = torch.randperm(batch_size, generator=self.generator, device=self.device)
            for start_row in range(0, batch_size, config.minibatch_size):
                rows = order[start_row : start_row + config.minibatch_size]
                mb_mask = mask[rows]
                with self.autocast():
                    logprobs, entropy, values = response_logprobs(
                        self.policy, *(x[rows] for x in tokens), value_head=self.value_head, **self.drawn_as
                    )
                # Clipped surrogate: max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old.
                log_ratio = (logprobs - rollout.logprobs[rows]) * mb_mask
                ratio = log_ratio.exp()
                clipped_ratio = ratio.clamp(1 - config.clip_range, 1 + config.clip_range)
                policy_loss = masked_mean(
                    torch.max(-advantages[rows] * ratio, -advantages[rows] * clipped_ratio), mb_mask
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
                nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm)  # detail 11
                self.optimizer.step()
                with torch.no_grad():
                    clipped = ((ratio - 1).abs() > config.clip_range).float()
                    logged["clip_fraction"] = masked_mean(clipped, mb_mask)
                    logged["approx_kl"] = masked_mean(ratio - 1 - log_ratio, mb_mask)  # k3, pi_old vs pi
                    minibatch_stats.append(logged)
                    if first_ratio_error is None:
                        # Before any step pi == pi_old, so this is 0 up to float rounding;
                        # anything else means the log-prob recomputation is inconsistent.
                        first_ratio_error = ((ratio - 1) * mb_mask).abs().max()

        # Adaptive KL controller (Ziegler et al. 2019): beta *= 1 + clip(KL/target - 1, +-0.2) n/H.
        sequence_kl = (
            kl_per_token(rollout.logprobs, rollout.ref_logprobs, mask, "k1").sum(dim=1).mean().item()
        )
        kl_coef_used = self.kl_coef
        if config.target_kl is not None:
            error = min(max(sequence_kl / config.target_kl - 1, -0.2), 0.2)
            self.kl_coef *= 1 + error * batch_size / config.kl_horizon

        # Statistics: one float each; the minibatch ones are averaged over all minibatches.
        stats = {
            name: torch.stack([logged[name] for logged in minibatch_stats]).mean().item()
            for name in minibatch_stats[0]
        }
        stats |= {
            "kl": sequence_kl,
            "kl_coef": kl_coef_used,
            "first_ratio_error": first_ratio_error.item(),  # max |pi/pi_old - 1|, first minibatch
            "response_length": mask.sum(dim=1).mean().item(),
            "time_generation": rollout.generation_seconds,
            "time_forward": rollout.forward_seconds,
            "time_update": clock(self.device) - start,
        }
        if returns is not None:  # of the value head: 1 - Var(G - V) / Var(G)
            unexplained = masked_var(returns - rollout.values, mask) / masked_var(returns, mask)
            stats["explained_variance"] = (1 - unexplained).item()
        if scores is not None:
            stats["score"] = scores.float().mean().item()
        return stats
