"""Causal-LM forward passes for RL: KV-cached sampling, and the log-probs of the sampled tokens.

PPO needs the log-probs of exactly the distribution the sampler drew from: the logits divided by
the temperature, EOS blocked for the first min_new_tokens steps. Both are written here, side by
side, so that they cannot drift apart; ppo.py's rollout and update, and run.py's held-out
evaluation, use them.

Shapes: B responses, P prompt length (left-padded), T longest response (right-padded), H hidden
size, V vocabulary. `response_mask (B, T)` is 1 on real response tokens up to and including EOS.
"""

import torch
import torch.nn.functional as F


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


def drawn_as(config, eos_token_id: int) -> dict:
    """response_logprobs' keyword arguments that score tokens as `sample` drew them under config."""
    return dict(
        temperature=config.temperature, eos_token_id=eos_token_id, min_new_tokens=config.min_new_tokens
    )


@torch.no_grad()
def sample(model, prompt_ids, prompt_mask, config, pad_token_id, eos_token_id, greedy=False, generator=None):
    """Autoregressive sampling with a KV cache from left-padded prompts, config a ppo.PPOConfig.

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
