"""Explain one reward-model score as credit per policy response token (SHAP, LIME, attention).

The RM gives one scalar `R = f(x, y)` for a prompt `x` and response `y = y_1..y_T`. This
stage splits it over the policy's response tokens (DESIGN.md sections 3-4):

    shap       phi_t, Shapley values of the game "which response tokens are visible"
               (Lundberg & Lee 2017), sum_t phi_t = f(x, y) - f(x, all masked)
    lime       beta_t, coefficients of a kernel-weighted linear surrogate of that game
               (Ribeiro et al. 2016)
    attention  alpha_t, the RM's last-layer attention from its read-out position (ABC,
               Chan et al. 2024), sum_t alpha_t = 1

Features are policy tokens, the RM only ever sees text: a coalition's response text is the
concatenation of the token pieces, a hidden piece replaced by a mask string (or deleted).
So SHAP and LIME need no token alignment, and the tokenizers may differ. Attention lives on
RM tokens and reaches policy tokens through character offsets.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import shap
import torch
from lime.lime_base import LimeBase
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import pairwise_distances
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

RewardFn = Callable[[list[str], list[str]], torch.Tensor]  # (prompts, responses) -> scores (N,)
METHODS = ("shap", "lime", "attention")
SHAP_BACKENDS = ("batched", "library", "exact")
LIME_BACKENDS = ("batched", "library")
MAX_EXACT_TOKENS = 14  # exact Shapley enumerates 2^T coalitions per response


@dataclass
class AttributionConfig:
    mask_string: str | None = "[UNK]"
    """text that replaces a hidden token (None or "": delete the token instead)"""
    shap_backend: str = "batched"
    """backend: "batched" (antithetic permutations, one RM call), "library" (shap), "exact" (2^T)"""
    shap_permutations: int = 4
    """permutations per response, an even number (antithetic pairs); at most P*(T-1)+2 RM rows"""
    lime_backend: str = "batched"
    """backend: "batched" (one RM call, one batched ridge solve) or "library" (the lime package)"""
    lime_samples: int = 256
    """perturbed samples per response, the unperturbed response included (both backends)"""
    lime_kernel_width: float = 25.0
    """width of LIME's text kernel, on cosine distance x 100 (the lime package's default)"""
    lime_ridge_alpha: float = 1.0
    """ridge penalty of the surrogate, intercept unpenalised (the lime package's default)"""
    max_rows_per_call: int = 8192
    """most rows handed to the reward function (or RM forward) at once"""
    seed: int = 0
    """seed of every sampled mask (permutations, LIME neighbourhoods)"""

    def __post_init__(self):
        if self.shap_backend not in SHAP_BACKENDS:
            raise ValueError(f"shap_backend={self.shap_backend!r}; expected one of {SHAP_BACKENDS}")
        if self.lime_backend not in LIME_BACKENDS:
            raise ValueError(f"lime_backend={self.lime_backend!r}; expected one of {LIME_BACKENDS}")
        if self.shap_permutations < 2 or self.shap_permutations % 2:
            raise ValueError(f"shap_permutations={self.shap_permutations}; expected an even number >= 2")
        if self.lime_samples < 2 or self.lime_kernel_width <= 0 or self.lime_ridge_alpha < 0:
            raise ValueError(
                f"lime_samples={self.lime_samples}, lime_kernel_width={self.lime_kernel_width}, "
                f"lime_ridge_alpha={self.lime_ridge_alpha}; expected >= 2, > 0, >= 0"
            )
        if self.max_rows_per_call < 1:
            raise ValueError(f"max_rows_per_call={self.max_rows_per_call}; expected >= 1")


# ---------------------------------------------------------------------------------------
# 1. Text mechanics: token pieces, coalition texts, scoring them
# ---------------------------------------------------------------------------------------
def response_texts(tokenizer, prompt_ids, response_ids, response_mask) -> tuple[list[str], list[list[str]]]:
    """Prompt texts and, per response, the text piece of each real response token.

    piece_t = decode(x + y_{<=t}) minus decode(x + y_{<t}), so that prompt + "".join(pieces) is
    the decoded full text. Special tokens (EOS) decode to an empty piece. Boundaries are
    positions in the full text (the longest prefix each partial decode shares with it), which
    also keeps a byte-level BPE character split over two tokens whole, in the later piece.
    """
    if response_mask.ndim != 2 or response_mask.shape != response_ids.shape:
        raise ValueError(
            f"response_mask has shape {tuple(response_mask.shape)}; expected response_ids' "
            f"shape {tuple(response_ids.shape)}"
        )
    lengths = response_mask.sum(1).long()  # (B,)
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    if not torch.equal(response_mask.bool(), positions < lengths[:, None]) or (lengths == 0).any():
        raise ValueError(
            "response_mask must be 1 on a non-empty run of tokens from position 0 "
            f"and 0 after; got rows {response_mask.long().tolist()}"
        )
    prompts, pieces = [], []
    for prompt, response, length in zip(prompt_ids.tolist(), response_ids.tolist(), lengths.tolist()):
        prefixes = tokenizer.batch_decode(
            [prompt + response[:t] for t in range(length + 1)], skip_special_tokens=True
        )
        full = prefixes[-1]
        bounds = np.maximum.accumulate([len(os.path.commonprefix([text, full])) for text in prefixes])
        prompts.append(full[: bounds[0]])
        pieces.append([full[start:end] for start, end in zip(bounds[:-1], bounds[1:])])
    return prompts, pieces


def masked_piece(piece: str, mask_string: str | None) -> str:
    """A hidden piece keeps its leading whitespace, the rest becomes the mask string ("" deletes)."""
    if not mask_string:
        return ""
    if not piece.strip():
        return piece
    return piece[: len(piece) - len(piece.lstrip())] + mask_string


def score_texts(prompts: list[str], responses: list[str], reward_fn: RewardFn, max_rows: int) -> torch.Tensor:
    """reward_fn over all rows, in chunks of at most `max_rows`; (N,) float64, all finite.

    Rows go in order of text length, so that texts batched together need little padding.
    """
    order = sorted(range(len(prompts)), key=lambda row: len(prompts[row]) + len(responses[row]))
    scores = torch.zeros(len(prompts), dtype=torch.float64)
    for start in range(0, len(order), max_rows):
        rows = order[start : start + max_rows]
        chunk_prompts, chunk_responses = [prompts[row] for row in rows], [responses[row] for row in rows]
        chunk = torch.as_tensor(reward_fn(chunk_prompts, chunk_responses))
        if chunk.shape != (len(chunk_prompts),):
            raise ValueError(
                f"reward_fn returned shape {tuple(chunk.shape)}; expected "
                f"({len(chunk_prompts)},), one score per row"
            )
        bad = (~torch.isfinite(chunk)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"reward_fn returned {chunk[row].item()} for the response {chunk_responses[row]!r} "
                f"(prompt {chunk_prompts[row]!r}); expected a finite score"
            )
        scores[rows] = chunk.double()
    return scores


def score_coalitions(
    prompts, pieces, owner, visible, reward_fn, config, deduplicate: bool = False
) -> tuple[torch.Tensor, int]:
    """f(x_i, y_i showing only the `visible` tokens) per row (R,), and the RM rows that took.

    owner (R,) is the response of each row, visible (R, T) its shown tokens. With
    `deduplicate`, a coalition drawn twice is scored once (random masks of short responses
    repeat often); the library backends score every row, as their packages do.
    """
    inverse = torch.arange(len(owner))
    if deduplicate:
        keys, inverse = torch.unique(
            torch.cat([owner[:, None], visible.long()], 1), dim=0, return_inverse=True
        )
        owner, visible = keys[:, 0], keys[:, 1:].bool()
    hidden = [[masked_piece(piece, config.mask_string) for piece in row] for row in pieces]
    texts = [
        "".join(piece if shown else mask for piece, mask, shown in zip(pieces[i], hidden[i], row))
        for i, row in zip(owner.tolist(), visible.tolist())
    ]
    values = score_texts([prompts[i] for i in owner.tolist()], texts, reward_fn, config.max_rows_per_call)
    return values[inverse], len(owner)


def real_tokens(pieces: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths T_i (B,) and the mask of real token positions (B, T) for ragged pieces."""
    lengths = torch.tensor([len(row) for row in pieces])
    return lengths, torch.arange(int(lengths.max())) < lengths[:, None]


def random_ranks(real: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n uniformly random orders of each response's real tokens: rank (B, n, T) of each token.

    Padding positions rank last (>= T_i), so `rank < k` picks k real tokens.
    """
    keys = torch.rand(real.shape[0], n, real.shape[1], generator=generator)
    keys = keys.masked_fill(~real[:, None], float("inf"))
    return keys.argsort(-1).argsort(-1)


# ---------------------------------------------------------------------------------------
# 2. SHAP: exact enumeration, antithetic permutation sampling, the shap package
# ---------------------------------------------------------------------------------------
def shap_exact(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """phi_t = sum_{S not containing t} |S|! (n-|S|-1)! / n! [f(S + t) - f(S)], all 2^n coalitions S."""
    lengths, real = real_tokens(pieces)
    if lengths.max() > MAX_EXACT_TOKENS:
        i = int(lengths.argmax())
        raise ValueError(
            f"exact Shapley enumerates 2^T coalitions: response {i} ({''.join(pieces[i])!r}) has "
            f"{int(lengths[i])} tokens; expected at most {MAX_EXACT_TOKENS} (use shap_backend='batched')"
        )
    T = real.shape[1]
    subsets = [torch.arange(2**n) for n in lengths.tolist()]  # bitmask of the visible tokens
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(subsets)])
    visible = (torch.cat(subsets)[:, None] >> torch.arange(T)) & 1 == 1  # (R, T)
    values, rows = score_coalitions(prompts, pieces, owner, visible, reward_fn, config)
    phi = torch.zeros(len(pieces), T, dtype=torch.float64)
    for i, (subset, value) in enumerate(zip(subsets, values.split([len(s) for s in subsets]))):
        size = visible[owner == i].sum(1).double()  # |S| of every coalition
        n = torch.tensor(len(pieces[i]), dtype=torch.float64)
        weight = torch.exp(torch.lgamma(size + 1) + torch.lgamma(n - size) - torch.lgamma(n + 1))
        for t in range(len(pieces[i])):
            without = subset[(subset >> t) & 1 == 0]
            phi[i, t] = (weight[without] * (value[without | 1 << t] - value[without])).sum()
    return phi.float(), rows


def shap_batched(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """Antithetic permutation sampling, every coalition of every response in one reward call.

        phi_t = 1/P sum_p [f(Pre_p(t) + t) - f(Pre_p(t))]

    Pre_p(t) = tokens before t in permutation p; permutations come in pairs pi, reverse(pi)
    (antithetic sampling, Mitchell et al. 2022; shap's PermutationExplainer does the same).
    Each permutation telescopes to f(full) - f(empty), so efficiency holds exactly. Rows per
    response: empty + full + P (T-1) prefixes in between, at most (a repeat is scored once).
    """
    lengths, real = real_tokens(pieces)
    B, T, P = real.shape[0], real.shape[1], config.shap_permutations
    generator = torch.Generator().manual_seed(config.seed)
    forward = random_ranks(real, P // 2, generator)  # (B, P/2, T) position of each token in pi
    backward = torch.where(real[:, None], lengths[:, None, None] - 1 - forward, forward)  # in reverse(pi)
    rank = torch.cat([forward, backward], 1)  # (B, P, T)
    steps = torch.arange(1, T)  # prefix sizes strictly between empty and full
    prefix = rank[:, :, None, :] < steps[:, None]  # (B, P, T-1, T)
    inside = (steps < lengths[:, None, None]).expand(B, P, T - 1)  # (B, P, T-1)
    owner = torch.cat(
        [torch.arange(B), torch.arange(B), torch.arange(B)[:, None, None].expand(B, P, T - 1)[inside]]
    )
    visible = torch.cat([torch.zeros_like(real), real, prefix[inside]])
    values, rows = score_coalitions(prompts, pieces, owner, visible, reward_fn, config, deduplicate=True)
    empty, full = values[:B], values[B : 2 * B]
    chain = full[:, None, None].repeat(1, P, T + 1)  # (B, P, T+1) f(first k of the permutation)
    chain[:, :, 0] = empty[:, None]
    chain[:, :, 1:T][inside] = values[2 * B :]
    marginal = chain.gather(2, rank + 1) - chain.gather(2, rank)  # (B, P, T); 0 on padding
    return (marginal.mean(1) * real).float(), rows


def shap_library(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """The shap package: PermutationExplainer over binary masks, all-masked background.

    One explainer per response (the mask width is its length). Its antithetic pairs cost
    2T+1 rows each, so max_evals = P/2 (2T+1) gives it the permutations of `shap_batched`.
    shap seeds numpy's global generator; the caller's numpy state is restored afterwards.
    """
    lengths, real = real_tokens(pieces)
    phi, rows, numpy_state = torch.zeros(real.shape, dtype=torch.float64), 0, np.random.get_state()
    for i, n in enumerate(lengths.tolist()):

        def model(masks: np.ndarray, i: int = i) -> np.ndarray:  # (R, n) in {0, 1} -> (R,)
            nonlocal rows
            owner, visible = torch.full((len(masks),), i), torch.as_tensor(masks) > 0.5
            values, used = score_coalitions(prompts, pieces, owner, visible, reward_fn, config)
            rows += used
            return values.numpy()

        masker = shap.maskers.Independent(np.zeros((1, n)))
        explainer = shap.PermutationExplainer(model, masker, seed=config.seed + i)
        explanation = explainer(
            np.ones((1, n)), max_evals=config.shap_permutations // 2 * (2 * n + 1), silent=True
        )
        phi[i, :n] = torch.as_tensor(explanation.values[0])
    np.random.set_state(numpy_state)
    return phi.float(), rows


# ---------------------------------------------------------------------------------------
# 3. LIME: a kernel-weighted ridge surrogate on random masks
# ---------------------------------------------------------------------------------------
def lime_kernel(distances: np.ndarray, width: float) -> np.ndarray:
    """pi(z) = sqrt(exp(-d^2 / width^2)), d = 100 x cosine distance to the full response.

    This is the lime package's kernel for text explanations.
    """
    return np.sqrt(np.exp(-(distances**2) / width**2))


def lime_batched(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """All neighbourhoods in one reward call, all surrogates in one batched solve.

        [beta_0, beta] = argmin sum_s pi(z_s) (f(z_s) - beta_0 - beta . z_s)^2 + alpha |beta|^2
                       = (X^T W X + alpha D)^-1 X^T W f,   X = [1, Z],  D = diag(0, 1, ..., 1)

    Same neighbourhood law as lime's text explainer: sample 0 is the full response, each
    other sample hides k ~ U{1..T} random tokens; a repeated sample is scored once. Padding
    columns of Z are 0 and get a unit ridge term, which pins their coefficients to 0.
    """
    lengths, real = real_tokens(pieces)
    B, T, N = real.shape[0], real.shape[1], config.lime_samples
    generator = torch.Generator().manual_seed(config.seed)
    n_hidden = (torch.rand(B, N - 1, generator=generator) * lengths[:, None]).long() + 1  # (B, N-1)
    hidden = random_ranks(real, N - 1, generator) < n_hidden[..., None]
    visible = torch.cat([real[:, None], real[:, None] & ~hidden], 1)  # (B, N, T)
    owner = torch.arange(B)[:, None].expand(B, N)
    values, rows = score_coalitions(
        prompts, pieces, owner.reshape(-1), visible.reshape(-1, T), reward_fn, config, deduplicate=True
    )
    distances = 100 * (1 - (visible.sum(-1) / lengths[:, None]).sqrt())  # (B, N)
    weights = torch.as_tensor(lime_kernel(distances.double().numpy(), config.lime_kernel_width))
    X = torch.cat([torch.ones(B, N, 1, dtype=torch.float64), visible.double()], -1)  # (B, N, T+1)
    penalty = torch.where(real, config.lime_ridge_alpha, 1.0).double()  # (B, T)
    penalty = torch.diag_embed(torch.cat([torch.zeros(B, 1, dtype=torch.float64), penalty], 1))
    gram = X.transpose(1, 2) @ (weights[..., None] * X) + penalty  # (B, T+1, T+1)
    target = X.transpose(1, 2) @ (weights * values.view(B, N))[..., None]  # (B, T+1, 1)
    beta = torch.linalg.solve(gram, target)[:, 1:, 0]
    return (beta * real).float(), rows


def lime_library(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """The lime package: LimeBase (lime's kernel-weighted ridge) over binary token masks.

    Why LimeBase and not LimeTextExplainer: the text explainer re-splits raw text with a
    regex, so its features cannot be the policy's tokens (sub-word BPE pieces, an EOS with
    no text, a prompt that must stay visible). The neighbourhood is drawn exactly as its
    text explainer draws it, from one generator seeded per call, one reward call per
    response (as lime's classifier_fn would see it), regression on the reward itself.
    """
    lengths, real = real_tokens(pieces)
    N, rng = config.lime_samples, np.random.RandomState(config.seed)
    explainer = LimeBase(lambda d: lime_kernel(d, config.lime_kernel_width), random_state=config.seed)
    beta = torch.zeros(real.shape, dtype=torch.float64)
    for i, n in enumerate(lengths.tolist()):
        masks = np.ones((N, n))
        for row, k in enumerate(rng.randint(1, n + 1, N - 1), start=1):
            masks[row, rng.choice(n, k, replace=False)] = 0
        visible = torch.as_tensor(masks) > 0.5
        values, _ = score_coalitions(prompts, pieces, torch.full((N,), i), visible, reward_fn, config)
        distances = pairwise_distances(masks, masks[:1], metric="cosine").ravel() * 100
        _, coefficients, _, _ = explainer.explain_instance_with_data(
            masks,
            values.numpy()[:, None],
            distances,
            0,
            n,
            feature_selection="none",
            model_regressor=Ridge(alpha=config.lime_ridge_alpha),
        )
        for feature, coefficient in coefficients:
            beta[i, feature] = coefficient
    return beta.float(), len(lengths) * N


# ---------------------------------------------------------------------------------------
# 4. Attention credit (ABC, Chan et al. 2024)
# ---------------------------------------------------------------------------------------
def reads_last_token(config) -> bool:
    """Decoder RMs score at the last real token, encoder RMs (BERT) at the first ([CLS])."""
    model_type = getattr(config, "model_type", "")
    return bool(getattr(config, "is_decoder", False)) or (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


@torch.no_grad()
def attention_credit(prompts, pieces, reward_model, reward_tokenizer, max_rows) -> tuple[torch.Tensor, int]:
    """alpha_t = sum_j A[r, j] share(j, t), normalised over the response: sum_t alpha_t = 1.

    A = last-layer attention averaged over heads, r = the RM's read-out position, j = RM
    tokens. share(j, t) splits RM token j evenly over the policy tokens t whose character
    span overlaps its own (RM special tokens and prompt tokens overlap none). A response
    whose pieces get no attention at all (e.g. only an EOS) gets a zero row.
    """
    texts = [prompt + "".join(row) for prompt, row in zip(prompts, pieces)]
    encoded = reward_tokenizer(texts, return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")  # (B, L, 2) character span of each RM token
    limit = getattr(reward_model.config, "max_position_embeddings", None)
    too_long = encoded["attention_mask"].sum(1) > (limit or float("inf"))
    if too_long.any():
        i = int(too_long.nonzero()[0])
        raise ValueError(
            f"response {i} ({texts[i]!r}) is {int(encoded['attention_mask'][i].sum())} RM tokens "
            f"long; expected at most max_position_embeddings={limit}"
        )
    readout_rows, device = [], next(reward_model.parameters()).device
    for start in range(0, len(texts), max_rows):
        chunk = {name: value[start : start + max_rows].to(device) for name, value in encoded.items()}
        attentions = reward_model(**chunk, output_attentions=True).attentions
        if not attentions or attentions[-1] is None:
            raise ValueError(
                "the reward model returned no attentions; load it with "
                "attn_implementation='eager' (SDPA kernels return none)"
            )
        mask = chunk["attention_mask"]  # (b, L)
        if reads_last_token(reward_model.config):
            readout = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        else:
            readout = mask.argmax(1)
        heads_mean = attentions[-1].mean(1)  # (b, L, L)
        readout_rows.append(heads_mean[torch.arange(len(readout), device=device), readout].cpu())  # (b, L)
    attention = torch.cat(readout_rows).double()  # (B, L)
    _, real = real_tokens(pieces)
    T = real.shape[1]
    bounds = torch.tensor(
        [
            list(accumulate([len(prompt)] + [len(piece) for piece in row] + [0] * (T - len(row))))
            for prompt, row in zip(prompts, pieces)
        ]
    )  # (B, T+1) character bounds of pieces
    piece_starts, piece_ends = bounds[:, :-1], bounds[:, 1:]
    rm_starts, rm_ends = offsets[..., 0, None], offsets[..., 1, None]  # (B, L, 1)
    overlap = ((rm_starts < piece_ends[:, None]) & (piece_starts[:, None] < rm_ends) & real[:, None]).double()
    share = overlap / overlap.sum(-1, keepdim=True).clamp_min(1)  # (B, L, T)
    alpha = torch.einsum("bl,blt->bt", attention, share)
    return (alpha / alpha.sum(1, keepdim=True).clamp_min(1e-30)).float(), len(texts)


# ---------------------------------------------------------------------------------------
# 5. Entry point
# ---------------------------------------------------------------------------------------
def attribute(
    method: str,
    tokenizer,
    prompt_ids,
    response_ids,
    response_mask,
    reward_fn: RewardFn | None,
    config: AttributionConfig | None = None,
    reward_model=None,
    reward_tokenizer=None,
) -> tuple[torch.Tensor, int]:
    """Attributions (B, T) over the policy's response tokens, zero outside the mask, and RM rows used.

    method "shap" and "lime" need `reward_fn` (texts -> scores); "attention" needs the RM
    and its tokenizer (loaded with eager attention).
    """
    config = config or AttributionConfig()
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")
    prompts, pieces = response_texts(tokenizer, prompt_ids, response_ids, response_mask)
    if method == "attention":
        if reward_model is None or reward_tokenizer is None:
            raise ValueError("method 'attention' needs reward_model and reward_tokenizer; got None")
        values, rows = attention_credit(
            prompts, pieces, reward_model, reward_tokenizer, config.max_rows_per_call
        )
    else:
        if reward_fn is None:
            raise ValueError(f"method {method!r} needs a reward_fn; got None")
        backends = {
            ("shap", "batched"): shap_batched,
            ("shap", "library"): shap_library,
            ("shap", "exact"): shap_exact,
            ("lime", "batched"): lime_batched,
            ("lime", "library"): lime_library,
        }
        backend = config.shap_backend if method == "shap" else config.lime_backend
        values, rows = backends[method, backend](prompts, pieces, reward_fn, config)
    attributions = torch.zeros(response_mask.shape, device=response_mask.device)
    attributions[:, : values.shape[1]] = values
    return attributions, rows
