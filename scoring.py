"""The reward: one scalar R = f(x, y) per (prompt, response), from a sequence-classifier reward model.

    R = logit_pos - logit_neg        (a 1-logit RM: its logit)

`score` reads texts (the RM's tokenizer sees `prompt + response`); `score_ids` reads token ids as
that tokenizer pads them, so a caller that builds RM inputs itself (SHAP and LIME coalitions on a
shared tokenizer) skips the text round trip. `sdpa_view` serves the RM's own weights through the
fast SDPA attention kernel: the RM stays loaded with eager attention for the attention maps that
ABC credit reads, and every score goes through the view.
"""

import copy

import torch


def positive_label(reward_model) -> int:
    """Index of the positive class: a label named like 'pos…' if there is one, else 1."""
    labels = reward_model.config.label2id.items()
    return next((int(index) for label, index in labels if label.lower().startswith("pos")), 1)


def sdpa_view(reward_model) -> torch.nn.Module:
    """The RM's own parameters and buffers (shared, not copied) behind the SDPA attention kernel.

    For scoring: same weights, same scores to float tolerance, no attention maps. A new module of
    the RM's class, built on the meta device and handed the RM's tensors, because transformers 4.46
    fixes the attention kernel when a model is built and 5.x reads it from the config at each call.
    Take the view after moving the RM to its device (a move replaces the RM's buffers). An RM class
    without an SDPA kernel is its own view.
    """
    if not getattr(reward_model, "_supports_sdpa", False):
        return reward_model
    config = copy.deepcopy(reward_model.config)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        view = type(reward_model)(config)
    named = [*reward_model.named_parameters(remove_duplicate=False), *reward_model.named_buffers()]
    for name, tensor in named:
        module_name, _, leaf = name.rpartition(".")
        module = view.get_submodule(module_name)
        (module._parameters if leaf in module._parameters else module._buffers)[leaf] = tensor
    return view.eval()


@torch.no_grad()
def score_ids(reward_model, input_ids, attention_mask, batch_tokens: int = 32768) -> torch.Tensor:
    """R = logit_pos - logit_neg of the RM on token ids (N, L) as its tokenizer pads them (N,).

    A 1-logit RM gives its logit. Rows go through in batches of about `batch_tokens` positions
    (1500 rows of 20 tokens, 280 of 116: activations that stay in cache), each batch without the
    columns that are padding in all its rows, so rows sorted by length pay little padding.
    """
    pos, scores, device = positive_label(reward_model), [], reward_model.device
    batch_size = max(1, batch_tokens // max(1, int(attention_mask.sum(1).max())))
    for start in range(0, len(input_ids), batch_size):
        mask = attention_mask[start : start + batch_size]  # (b, L)
        columns = mask.bool().any(0)  # (L,) a real token in some row
        ids = input_ids[start : start + batch_size, columns]
        logits = reward_model(input_ids=ids.to(device), attention_mask=mask[:, columns].to(device)).logits
        logits = logits.float()  # (b, labels)
        scores.append(logits[:, 0] if logits.shape[1] == 1 else logits[:, pos] - logits[:, 1 - pos])
    return torch.cat(scores).cpu()


def score(
    reward_model, reward_tokenizer, prompts: list[str], responses: list[str], batch_size: int = 1024
) -> torch.Tensor:
    """R = logit_pos - logit_neg of the RM on `prompt + response` (N,): tokenize, then `score_ids`.

    Responses carry their own leading space. A text over the RM's position limit is an error.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts for {len(responses)} responses")
    texts = [p + r for p, r in zip(prompts, responses)]
    limit = getattr(reward_model.config, "max_position_embeddings", None) or reward_tokenizer.model_max_length
    scores = []
    for start in range(0, len(texts), batch_size):
        enc = reward_tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        lengths = enc["attention_mask"].sum(1)
        if lengths.max() > limit:
            longest = start + int(lengths.argmax())
            raise ValueError(
                f"text {texts[longest]!r}: {int(lengths.max())} RM tokens, at most {limit} expected"
            )
        scores.append(score_ids(reward_model, enc["input_ids"], enc["attention_mask"]))
    return torch.cat(scores)
