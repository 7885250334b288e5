"""Explain one reward-model score as credit per policy response token (SHAP, LIME, attention).

The RM gives one scalar `R = f(x, y)` for a prompt `x` and response `y = y_1..y_T`. This
stage splits it over the policy's response tokens (definitions: docs/method.md, section 2):

    shap       phi_t, Shapley values of the game "which response tokens are visible"
               (Lundberg & Lee 2017), sum_t phi_t = f(x, y) - f(x, all masked)
    lime       beta_t, coefficients of a kernel-weighted linear surrogate of that game
               (Ribeiro et al. 2016)
    attention  alpha_t, the RM's last-layer attention from its read-out position (ABC,
               Chan et al. 2024), sum_t alpha_t = 1

Features are policy tokens. A coalition's text is the concatenation of the token pieces, a
hidden piece replaced by a mask string (or deleted), so the tokenizers may differ; where the
RM reads the policy's tokens one to one, a `TokenReward` builds the same RM input as ids. RM
tokens reach policy tokens through character offsets (attention credit, the id path).

Shapes: B responses, T the longest response in policy tokens (T_i of response i), N rows (coalitions)
handed to the reward function, K SHAP permutations and S LIME samples per response, L RM tokens.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shap
import torch
from lime.lime_base import LimeBase
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import pairwise_distances
from transformers.models.auto import modeling_auto

RewardFn = Callable[[list[str], list[str]], torch.Tensor]  # (prompts, responses) -> scores (N,)
METHODS = ("shap", "lime", "attention")
SHAP_BACKENDS = ("batched", "library", "exact")
LIME_BACKENDS = ("batched", "library")
MAX_EXACT_TOKENS = 14  # exact Shapley enumerates 2^T coalitions per response


@dataclass
class AttributionConfig:
    mask_string: str | None = "[UNK]"  # replaces a hidden token's text (None or "": delete it instead)
    shap_backend: str = "batched"  # "batched" (permutations, one RM call), "library" (shap), "exact" (2^T)
    shap_permutations: int = 2  # K per response: pairs pi, reverse(pi), an odd one alone; <= K (T-1) + 2 rows
    lime_backend: str = "batched"  # "batched" (one RM call, one batched solve), "library" (lime)
    lime_samples: int = 48  # S per response, the unperturbed response included
    lime_kernel_width: float = 25.0  # of LIME's text kernel on 100 x cosine distance (lime's default)
    lime_ridge_alpha: float = 1.0  # ridge penalty of the surrogate, intercept unpenalised (lime's default)
    max_rows_per_call: int = 8192  # most rows handed to the reward function (or RM forward) at once
    seed: int = 0  # of every sampled mask (permutations, LIME neighbourhoods)

    def __post_init__(self):
        if self.shap_backend not in SHAP_BACKENDS:
            raise ValueError(f"shap_backend={self.shap_backend!r}; expected one of {SHAP_BACKENDS}")
        if self.lime_backend not in LIME_BACKENDS:
            raise ValueError(f"lime_backend={self.lime_backend!r}; expected one of {LIME_BACKENDS}")
        if self.shap_permutations < 1:
            raise ValueError(f"shap_permutations={self.shap_permutations}; expected >= 1")
        if self.shap_backend == "library" and self.shap_permutations % 2:
            pairs = "the shap package samples pairs: expected an even number with shap_backend='library'"
            raise ValueError(f"shap_permutations={self.shap_permutations}; {pairs}")
        if self.lime_samples < 2 or self.lime_kernel_width <= 0 or self.lime_ridge_alpha < 0:
            raise ValueError(f"{self}: expected lime_samples >= 2, kernel width > 0, ridge alpha >= 0")
        if self.max_rows_per_call < 1:
            raise ValueError(f"max_rows_per_call={self.max_rows_per_call}; expected >= 1")


# ---- 1. Text mechanics: token pieces, coalition texts, scoring them -------------------------
def response_texts(tokenizer, prompt_ids, response_ids, response_mask) -> tuple[list[str], list[list[str]]]:
    """Prompt texts and, per response, the text piece of each real response token.

    piece_t = decode(x + y_{<=t}) minus decode(x + y_{<t}), so that prompt + "".join(pieces) is
    the decoded full text. Special tokens (EOS) decode to an empty piece. Boundaries are
    positions in the full text (the longest prefix each partial decode shares with it), which
    also keeps a byte-level BPE character split over two tokens whole, in the later piece.
    """
    if response_mask.ndim != 2 or response_mask.shape != response_ids.shape:
        shapes = tuple(response_mask.shape), tuple(response_ids.shape)
        raise ValueError(f"response_mask and response_ids have shapes {shapes}; expected one (B, T) shape")
    lengths = response_mask.sum(1).long()  # (B,)
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    if not torch.equal(response_mask.bool(), positions < lengths[:, None]) or (lengths == 0).any():
        rows = response_mask.long().tolist()
        raise ValueError(f"response_mask must be 1 on a non-empty run from position 0, then 0; got {rows}")
    prompts, pieces = [], []
    for prompt, response, length in zip(prompt_ids.tolist(), response_ids.tolist(), lengths.tolist()):
        partial = [prompt + response[:t] for t in range(length + 1)]  # x + y_{<t}, t = 0..T_i
        prefixes = tokenizer.batch_decode(partial, skip_special_tokens=True)
        full = prefixes[-1]
        bounds = np.maximum.accumulate([len(os.path.commonprefix([text, full])) for text in prefixes])
        prompts.append(full[: bounds[0]])
        pieces.append([full[start:end] for start, end in zip(bounds[:-1], bounds[1:])])
    return prompts, pieces


def masked_piece(piece: str, mask_string: str | None) -> str:
    """A hidden piece keeps its leading whitespace, the rest becomes the mask string ("" deletes)."""
    if not mask_string or not piece.strip():
        return piece if mask_string else ""
    return piece[: len(piece) - len(piece.lstrip())] + mask_string


@dataclass
class TokenReward:
    """f over the RM's token ids, for an RM that reads the policy's tokens one to one (`coalition_inputs`)."""

    tokenizer: object  # the RM's tokenizer
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, attention_mask) (N, L) -> (N,)
    max_length: int | None = None  # the RM's position limit (max_position_embeddings)


def rm_tokens(prompts, pieces, tokenizer, max_length) -> tuple[dict, torch.Tensor]:
    """The RM's encoding of each full text (B, L) and overlap (B, L, T): RM token l spans characters
    of policy token t (RM special and prompt tokens overlap none). Texts over max_length: an error."""
    texts = [prompt + "".join(row) for prompt, row in zip(prompts, pieces)]
    encoded = tokenizer(texts, return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")  # (B, L, 2) character span of each RM token
    too_long = encoded["attention_mask"].sum(1) > (max_length or float("inf"))
    if too_long.any():
        i = int(too_long.nonzero()[0])
        raise ValueError(f"response {i} is over max_position_embeddings={max_length} RM tokens: {texts[i]!r}")
    _, real = real_tokens(pieces)  # (B, T)
    T = real.shape[1]
    # characters of the prompt, then of each piece (0 past the response): (B, T+1)
    widths = [[len(prompt), *map(len, row)] + [0] * (T - len(row)) for prompt, row in zip(prompts, pieces)]
    bounds = torch.tensor(widths).cumsum(1)  # (B, T+1) piece t spans characters [bounds_t, bounds_t+1)
    piece_starts, piece_ends = bounds[:, None, :-1], bounds[:, None, 1:]  # (B, 1, T) each
    rm_starts, rm_ends = offsets[..., 0, None], offsets[..., 1, None]  # (B, L, 1) each
    overlap = (rm_starts < piece_ends) & (piece_starts < rm_ends)  # (B, L, T) the spans intersect
    return encoded, overlap & real[:, None]


def coalition_inputs(prompts, pieces, owner, visible, token_reward, mask_string) -> tuple[torch.Tensor, ...]:
    """The RM's input ids and attention mask (N, L) of each coalition, built as ids (`TokenReward`).

    Where each policy token with text is one RM token (checked, refused otherwise), whitespace in none
    and the mask string one (a word-level tokenizer shared with the policy, as on the embedded task),
    the full text's encoding with hidden tokens' ids made the mask's is what the text path tokenizes."""
    tokenizer = token_reward.tokenizer
    encoded, overlap = rm_tokens(prompts, pieces, tokenizer, token_reward.max_length)  # (B, L), (B, L, T)
    text = [[int(bool(p.strip())) for p in row] + [0] * (overlap.shape[2] - len(row)) for row in pieces]
    one_to_one = (overlap.sum(2) <= 1).all() and torch.equal(overlap.sum(1), torch.tensor(text))
    mask_ids = tokenizer(mask_string or "", add_special_tokens=False)["input_ids"]
    if not one_to_one or len(mask_ids) != 1:
        raise ValueError(
            "the RM does not read the policy's tokens one to one (or the mask string is not "
            "one RM token): score texts with a RewardFn"
        )
    hidden = (overlap[owner] & ~visible[:, None, :]).any(2)  # (N, L) RM tokens of hidden policy tokens
    return encoded["input_ids"][owner].masked_fill(hidden, mask_ids[0]), encoded["attention_mask"][owner]


def score_coalitions(
    prompts, pieces, owner, visible, reward_fn, config, dedupe=False
) -> tuple[torch.Tensor, int]:
    """f(x_i, y_i showing only the `visible` tokens) per row (N,) float64, and the RM rows that took.

    owner (N,) is the response of each row, visible (N, T) its shown tokens; reward_fn a RewardFn (texts)
    or a TokenReward (ids). With `dedupe`, a coalition drawn twice is scored once (random masks of short
    responses repeat often); the library backends score every row, as their packages do. reward_fn gets
    at most config.max_rows_per_call rows at once, by length (little padding).
    """
    inverse = torch.arange(len(owner))
    if dedupe:
        keyed = torch.cat([owner[:, None], visible.long()], 1)  # (N, 1+T) the response, then the mask
        keys, inverse = torch.unique(keyed, dim=0, return_inverse=True)  # keys: the distinct rows
        owner, visible = keys[:, 0], keys[:, 1:].bool()
    if isinstance(reward_fn, TokenReward):
        first, second = coalition_inputs(prompts, pieces, owner, visible, reward_fn, config.mask_string)
        lengths, score = second.sum(1).tolist(), reward_fn.score  # (N, L) ids and attention mask
    else:
        hidden = [[masked_piece(piece, config.mask_string) for piece in row] for row in pieces]
        first = [prompts[i] for i in owner.tolist()]  # the prompt and the response text of each row
        second = [
            "".join(piece if shown else mask for piece, mask, shown in zip(pieces[i], hidden[i], row))
            for i, row in zip(owner.tolist(), visible.tolist())
        ]
        lengths, score = [len(prompt) + len(text) for prompt, text in zip(first, second)], reward_fn
    order = sorted(range(len(owner)), key=lengths.__getitem__)
    values = torch.zeros(len(owner), dtype=torch.float64)
    for start in range(0, len(order), config.max_rows_per_call):
        rows = order[start : start + config.max_rows_per_call]
        picked = [x[rows] if torch.is_tensor(x) else [x[row] for row in rows] for x in (first, second)]
        chunk = torch.as_tensor(score(*picked))
        if chunk.shape != (len(rows),):
            raise ValueError(f"reward_fn returned shape {tuple(chunk.shape)}; expected ({len(rows)},)")
        values[rows] = chunk.double()
    bad = (~torch.isfinite(values[order])).nonzero()  # the first in the order scored is named
    if len(bad):
        row = order[int(bad[0])]
        raise ValueError(f"reward_fn returned {values[row].item()} for {first[row]!r}, {second[row]!r}")
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


# ---- 2. SHAP: exact enumeration, antithetic permutation sampling, the shap package ----------
def shap_exact(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """phi_t = sum_{S not containing t} |S|! (n-|S|-1)! / n! [f(S + t) - f(S)], all 2^n coalitions S.

    A coalition is a bitmask over the response's tokens: bit t set = token t visible.
    """
    lengths, real = real_tokens(pieces)
    if lengths.max() > MAX_EXACT_TOKENS:
        i = int(lengths.argmax())
        raise ValueError(f"response {i} has {int(lengths[i])} tokens; exact Shapley takes {MAX_EXACT_TOKENS}")
    T = real.shape[1]
    subsets = [torch.arange(2**n) for n in lengths.tolist()]  # response i: coalitions 0 .. 2^T_i - 1
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(subsets)])  # (N,)
    bits = torch.cat(subsets)[:, None] >> torch.arange(T)  # (N, T) bit t moved to the lowest place
    visible = (bits & 1) == 1  # (N, T)
    values, rows = score_coalitions(prompts, pieces, owner, visible, reward_fn, config)  # (N,)
    phi = torch.zeros(len(pieces), T, dtype=torch.float64)
    for i, (subset, value) in enumerate(zip(subsets, values.split([len(s) for s in subsets]))):
        size = visible[owner == i].sum(1).double()  # (2^n,) |S|
        n = torch.tensor(len(pieces[i]), dtype=torch.float64)
        weight = torch.exp(torch.lgamma(size + 1) + torch.lgamma(n - size) - torch.lgamma(n + 1))  # (2^n,)
        for t in range(len(pieces[i])):
            token = 1 << t
            without = subset[(subset & token) == 0]  # (2^(n-1),) the coalitions S not containing t
            phi[i, t] = (weight[without] * (value[without | token] - value[without])).sum()
    return phi.float(), rows


def shap_batched(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """Antithetic permutation sampling, every coalition of every response in one reward call.

        phi_t = 1/K sum_p [f(Pre_p(t) + t) - f(Pre_p(t))]

    Pre_p(t) = tokens before t in permutation p, a uniformly random order (Castro et al. 2009);
    they come in pairs pi, reverse(pi) (antithetic sampling, Mitchell et al. 2022; shap's
    PermutationExplainer does the same), an odd K ending with one order alone. Each
    permutation telescopes to f(full) - f(empty), so efficiency holds exactly at any K. Rows
    per response: empty + full + K (T-1) prefixes in between, at most (a repeat is scored once).
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    B, T, K = real.shape[0], real.shape[1], config.shap_permutations
    generator = torch.Generator().manual_seed(config.seed)
    forward = random_ranks(real, (K + 1) // 2, generator)  # (B, ceil(K/2), T) place of each token in pi
    reverse = lengths[:, None, None] - 1 - forward[:, : K // 2]  # (B, K/2, T) its place in reverse(pi)
    backward = torch.where(real[:, None], reverse, forward[:, : K // 2])  # padding keeps its rank
    rank = torch.cat([forward, backward], 1)  # (B, K, T)
    sizes = torch.arange(1, T)  # (T-1,) prefix sizes k strictly between empty and full
    prefix = rank[:, :, None, :] < sizes[:, None]  # (B, K, T-1, T) the first k tokens of permutation p
    inner = (sizes < lengths[:, None, None]).expand(B, K, T - 1)  # (B, K, T-1) k < T_i: not yet full
    # The rows scored, in this order (the slices of `values` below rely on it): [0, B) the empty coalition
    # of each response, [B, 2B) the full response, [2B, N) the inner prefixes (response, permutation, size)
    responses = torch.arange(B)  # (B,)
    inner_owner = responses[:, None, None].expand(B, K, T - 1)[inner]  # (N - 2B,)
    owner = torch.cat([responses, responses, inner_owner])  # (N,)
    visible = torch.cat([torch.zeros_like(real), real, prefix[inner]])  # (N, T)
    values, rows = score_coalitions(prompts, pieces, owner, visible, reward_fn, config, dedupe=True)
    empty, full, inner_values = values[:B], values[B : 2 * B], values[2 * B :]  # (B,), (B,), (N - 2B,)
    chain = full[:, None, None].repeat(1, K, T + 1)  # (B, K, T+1) f(first k tokens of p), k = 0..T
    chain[:, :, 0] = empty[:, None]
    chain[:, :, 1:T][inner] = inner_values
    marginal = chain.gather(2, rank + 1) - chain.gather(2, rank)  # (B, K, T) f(Pre_p(t) + t) - f(Pre_p(t))
    return (marginal.mean(1) * real).float(), rows


def shap_library(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """The shap package: PermutationExplainer over binary masks, all-masked background.

    One explainer per response (the mask width is its length). Its antithetic pairs cost
    2T+1 rows each, so max_evals = K/2 (2T+1) gives it the permutations of `shap_batched`.
    shap seeds numpy's global generator; the caller's numpy state is restored afterwards.
    """
    lengths, real = real_tokens(pieces)
    phi, rows, numpy_state = torch.zeros(real.shape, dtype=torch.float64), 0, np.random.get_state()
    for i, n in enumerate(lengths.tolist()):

        def model(masks: np.ndarray, i: int = i) -> np.ndarray:  # (N, n) in {0, 1} -> (N,)
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


# ---- 3. LIME: a kernel-weighted ridge surrogate on random masks -----------------------------
def lime_kernel(distances: np.ndarray, width: float) -> np.ndarray:
    """lime's text kernel pi = sqrt(exp(-d^2 / width^2)), d = 100 x cosine distance to the full response."""
    return np.sqrt(np.exp(-(distances**2) / width**2))


def lime_batched(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """All neighbourhoods in one reward call, all surrogates in one batched solve.

        [beta_0, beta] = argmin sum_s pi(z_s) (f(z_s) - beta_0 - beta . z_s)^2 + alpha |beta|^2
                       = (X^T W X + alpha D)^-1 X^T W f,   X = [1, Z],  D = diag(0, 1, ..., 1)

    Same neighbourhood law as lime's text explainer: sample 0 is the full response, each
    other sample hides k ~ U{1..T} random tokens; a repeated sample is scored once. Padding
    columns of Z are 0 and get a unit ridge term, which pins their coefficients to 0.
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    B, T, S = real.shape[0], real.shape[1], config.lime_samples
    generator = torch.Generator().manual_seed(config.seed)
    n_hidden = (torch.rand(B, S - 1, generator=generator) * lengths[:, None]).long() + 1  # (B, S-1) k
    hidden = random_ranks(real, S - 1, generator) < n_hidden[..., None]  # (B, S-1, T)
    visible = torch.cat([real[:, None], real[:, None] & ~hidden], 1)  # (B, S, T) Z
    owner = torch.arange(B).repeat_interleave(S)  # (N,) = (B S,) the response of each row
    flat = visible.view(-1, T)  # (N, T)
    values, rows = score_coalitions(prompts, pieces, owner, flat, reward_fn, config, dedupe=True)
    distances = 100 * (1 - (visible.sum(-1) / lengths[:, None]).sqrt())  # (B, S)
    weights = torch.as_tensor(lime_kernel(distances.double().numpy(), config.lime_kernel_width))  # (B, S)
    X = torch.cat([torch.ones(B, S, 1, dtype=torch.float64), visible.double()], -1)  # (B, S, T+1)
    penalty = torch.where(real, config.lime_ridge_alpha, 1.0).double()  # (B, T)
    penalty = torch.diag_embed(torch.cat([torch.zeros(B, 1, dtype=torch.float64), penalty], 1))
    gram = X.transpose(1, 2) @ (weights[..., None] * X) + penalty  # (B, T+1, T+1)
    target = X.transpose(1, 2) @ (weights * values.view(B, S))[..., None]  # (B, T+1, 1)
    beta = torch.linalg.solve(gram, target)[:, 1:, 0]  # (B, T)
    return (beta * real).float(), rows


def lime_library(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """The lime package: LimeBase (lime's kernel-weighted ridge) over binary token masks.

    Not LimeTextExplainer: it re-splits raw text with a regex, so its features cannot be the
    policy's tokens (BPE pieces, an EOS with no text, a prompt that must stay visible). The
    neighbourhood is drawn as its text explainer draws it, from one generator seeded per call,
    one reward call per response (as lime's classifier_fn sees it), regressing the reward.
    """
    lengths, real = real_tokens(pieces)
    S, rng = config.lime_samples, np.random.RandomState(config.seed)
    explainer = LimeBase(lambda d: lime_kernel(d, config.lime_kernel_width), random_state=config.seed)
    beta = torch.zeros(real.shape, dtype=torch.float64)
    for i, n in enumerate(lengths.tolist()):
        masks = np.ones((S, n))
        for row, k in enumerate(rng.randint(1, n + 1, S - 1), start=1):
            masks[row, rng.choice(n, k, replace=False)] = 0
        visible = torch.as_tensor(masks) > 0.5
        values, _ = score_coalitions(prompts, pieces, torch.full((S,), i), visible, reward_fn, config)
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
    return beta.float(), len(lengths) * S


# ---- 4. Attention credit (ABC, Chan et al. 2024) --------------------------------------------
def reads_last_token(config) -> bool:
    """Decoder RMs score at the last real token, encoder RMs (BERT) at the first ([CLS])."""
    model_type = getattr(config, "model_type", "")
    return bool(getattr(config, "is_decoder", False)) or (
        model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


@torch.no_grad()
def readout_attention(reward_model, encoded, max_rows: int) -> torch.Tensor:
    """A[r, :], the last layer's attention averaged over heads, from the read-out position r: (B, L)."""
    readout_rows, device = [], next(reward_model.parameters()).device
    for start in range(0, len(encoded["input_ids"]), max_rows):
        chunk = {name: value[start : start + max_rows].to(device) for name, value in encoded.items()}
        attentions = reward_model(**chunk, output_attentions=True).attentions
        if not attentions or attentions[-1] is None:
            raise ValueError("the RM returned no attentions: load it with attn_implementation='eager'")
        mask = chunk["attention_mask"]  # (b, L)
        last = reads_last_token(reward_model.config)  # read at the last real token, else the first
        readout = mask.shape[1] - 1 - mask.flip(1).argmax(1) if last else mask.argmax(1)  # (b,)
        heads_mean = attentions[-1].mean(1)  # (b, L, L)
        readout_rows.append(heads_mean[torch.arange(len(readout), device=device), readout].cpu())  # (b, L)
    return torch.cat(readout_rows).double()  # (B, L)


def attention_credit(prompts, pieces, reward_model, reward_tokenizer, max_rows) -> tuple[torch.Tensor, int]:
    """alpha_t = sum_l A[r, l] share(l, t), normalised over the response: sum_t alpha_t = 1.

    A = last-layer attention averaged over heads, r = the RM's read-out position, l = RM tokens;
    share(l, t) splits RM token l evenly over the policy tokens t it overlaps (`rm_tokens`). A
    response whose pieces get no attention at all (e.g. only an EOS) gets a zero row.
    """
    limit = getattr(reward_model.config, "max_position_embeddings", None)
    encoded, overlap = rm_tokens(prompts, pieces, reward_tokenizer, limit)  # (B, L), (B, L, T)
    attention = readout_attention(reward_model, encoded, max_rows)  # (B, L)
    share = overlap.double() / overlap.sum(-1, keepdim=True).clamp_min(1)  # (B, L, T) share(l, t)
    alpha = (attention[:, None, :] @ share)[:, 0]  # (B, T) sum_l A[r, l] share(l, t)
    total = alpha.sum(1, keepdim=True).clamp_min(1e-30)  # (B, 1)
    return (alpha / total).float(), len(pieces)


# ---- 5. Entry points: over token ids, or over the texts a caller already decoded ------------
BACKENDS = {
    ("shap", "batched"): shap_batched,
    ("shap", "library"): shap_library,
    ("shap", "exact"): shap_exact,
    ("lime", "batched"): lime_batched,
    ("lime", "library"): lime_library,
}


def attribute_texts(
    method, prompts, pieces, reward_fn, config=None, reward_model=None, reward_tokenizer=None
) -> tuple[torch.Tensor, int]:
    """Attributions (B, T) over response pieces, T = the longest T_i, zero past each; and RM rows used.

    prompts, pieces: `response_texts`' output (decode a batch once, explain it by several
    methods). "shap" and "lime" need `reward_fn` (a RewardFn); "attention" needs the RM and its
    tokenizer (loaded with eager attention). config: an AttributionConfig (None: the defaults).
    """
    config = config or AttributionConfig()
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")
    if len(prompts) != len(pieces) or not pieces or min(map(len, pieces)) == 0:
        raise ValueError(f"got {len(prompts)} prompts, {len(pieces)} responses; expected as many, none empty")
    if method == "attention":
        if reward_model is None or reward_tokenizer is None:
            raise ValueError("method 'attention' needs reward_model and reward_tokenizer; got None")
        return attention_credit(prompts, pieces, reward_model, reward_tokenizer, config.max_rows_per_call)
    if reward_fn is None:
        raise ValueError(f"method {method!r} needs a reward_fn; got None")
    backend = config.shap_backend if method == "shap" else config.lime_backend
    return BACKENDS[method, backend](prompts, pieces, reward_fn, config)


def attribute(
    method,
    tokenizer,
    prompt_ids,
    response_ids,
    response_mask,
    reward_fn,
    config=None,
    reward_model=None,
    reward_tokenizer=None,
) -> tuple[torch.Tensor, int]:
    """Attributions (B, T) over the policy's response tokens, zero outside the mask, and RM rows used.

    `response_texts` then `attribute_texts`; to explain one batch by several methods, call
    those two directly and decode once.
    """
    prompts, pieces = response_texts(tokenizer, prompt_ids, response_ids, response_mask)
    values, rows = attribute_texts(method, prompts, pieces, reward_fn, config, reward_model, reward_tokenizer)
    attributions = torch.zeros(response_mask.shape, device=response_mask.device)
    attributions[:, : values.shape[1]] = values
    return attributions, rows
