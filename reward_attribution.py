"""Explain one reward-model score as credit per policy response token:
SHAP, LIME or attention.

The RM gives one scalar R = f(x, y) for a prompt x and a response
y = y_1..y_T. This stage splits it over the policy's response tokens
(definitions: docs/method.md, section 2):

    shap       phi_t, Shapley values of the game "which response tokens
               are visible" (Lundberg & Lee 2017),
               sum_t phi_t = f(x, y) - f(x, all masked)
    lime       beta_t, coefficients of a kernel-weighted linear
               surrogate of that game (Ribeiro et al. 2016)
    attention  alpha_t, the RM's last-layer attention from its read-out
               position (ABC, Chan et al. 2024), sum_t alpha_t = 1

The game (token pieces, coalitions as texts or RM ids, scoring them) is
coalitions.py: copying this file means copying coalitions.py beside it.

Shapes: B responses, T the longest response in policy tokens (T_i of
response i), N rows (coalitions) handed to the reward function, K SHAP
permutations and S LIME samples per response, L RM tokens.
"""

from dataclasses import dataclass

import numpy as np
import shap
import torch
from lime.lime_base import LimeBase
from sklearn.linear_model import Ridge
from sklearn.metrics.pairwise import pairwise_distances
from transformers.models.auto import modeling_auto

from coalitions import random_ranks, real_tokens, response_texts, rm_tokens, score_coalitions

METHODS = ("shap", "lime", "attention")
SHAP_BACKENDS = ("batched", "library", "exact")
LIME_BACKENDS = ("batched", "library")
MAX_EXACT_TOKENS = 14  # exact Shapley scores 2^T coalitions a response


@dataclass
class AttributionConfig:
    mask_string: str | None = "[UNK]"  # a hidden token's text (None, "": delete it)
    shap_backend: str = "batched"  # permutations, one RM call; "library" (shap), "exact" (2^T)
    shap_permutations: int = 2  # K: pairs pi, reverse(pi), an odd one alone; <= K (T-1) + 2 rows
    lime_backend: str = "batched"  # one RM call, one batched solve; "library" (lime)
    lime_samples: int = 48  # S per response, the full response included
    lime_kernel_width: float = 25.0  # on 100 x cosine distance (lime's default)
    lime_ridge_alpha: float = 1.0  # intercept unpenalised (lime's default)
    max_rows_per_call: int = 8192  # to the reward function (or RM forward) at once
    seed: int = 0  # of every sampled mask (permutations, LIME samples)

    def __post_init__(self):
        K, S = self.shap_permutations, self.lime_samples
        if self.shap_backend not in SHAP_BACKENDS:
            got = f"shap_backend={self.shap_backend!r}"
            raise ValueError(f"{got}; expected one of {SHAP_BACKENDS}")
        if self.lime_backend not in LIME_BACKENDS:
            got = f"lime_backend={self.lime_backend!r}"
            raise ValueError(f"{got}; expected one of {LIME_BACKENDS}")
        if K < 1:
            raise ValueError(f"shap_permutations={K}; expected >= 1")
        if self.shap_backend == "library" and K % 2:
            pairs = "the shap package samples pairs: expected an even number"
            raise ValueError(f"shap_permutations={K}; {pairs} with shap_backend='library'")
        if S < 2 or self.lime_kernel_width <= 0 or self.lime_ridge_alpha < 0:
            expected = "lime_samples >= 2, kernel width > 0, ridge alpha >= 0"
            raise ValueError(f"{self}: expected {expected}")
        if self.max_rows_per_call < 1:
            raise ValueError(f"max_rows_per_call={self.max_rows_per_call}; expected >= 1")


# ---- 1. SHAP: exact, antithetic permutation sampling, the shap package
def shap_exact(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """Exact Shapley values over all 2^n coalitions S of n = T_i tokens:

        phi_t = sum_{S not containing t} |S|! (n-|S|-1)! / n! [f(S + t) - f(S)]

    A coalition is a bitmask over the response's tokens: bit t set =
    token t visible.
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    if lengths.max() > MAX_EXACT_TOKENS:
        i = int(lengths.argmax())
        got = f"response {i} has {int(lengths[i])} tokens"
        raise ValueError(f"{got}; exact Shapley takes {MAX_EXACT_TOKENS}")
    T = real.shape[1]
    subsets = [torch.arange(2**n) for n in lengths.tolist()]  # 0 .. 2^T_i - 1
    counts = [len(s) for s in subsets]
    owner = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])  # (N,)
    bits = torch.cat(subsets)[:, None] >> torch.arange(T)  # (N, T) bit t at 0
    visible = (bits & 1) == 1  # (N, T)
    game = prompts, pieces, owner, visible
    values, rows = score_coalitions(*game, reward_fn, config)  # (N,)
    phi = torch.zeros(len(pieces), T, dtype=torch.float64)  # (B, T)
    for i, (subset, value) in enumerate(zip(subsets, values.split(counts))):
        size = visible[owner == i].sum(1).double()  # (2^n,) |S|
        n = torch.tensor(len(pieces[i]), dtype=torch.float64)
        lgamma = torch.lgamma
        log_weight = lgamma(size + 1) + lgamma(n - size) - lgamma(n + 1)
        weight = torch.exp(log_weight)  # (2^n,) |S|! (n-|S|-1)! / n!
        for t in range(len(pieces[i])):
            token = 1 << t
            without = subset[(subset & token) == 0]  # (2^(n-1),) S without t
            gain = value[without | token] - value[without]  # f(S + t) - f(S)
            phi[i, t] = (weight[without] * gain).sum()
    return phi.float(), rows


def shap_batched(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """Antithetic permutation sampling, every coalition of every
    response in one reward call:

        phi_t = 1/K sum_p [f(Pre_p(t) + t) - f(Pre_p(t))]

    Pre_p(t) = tokens before t in permutation p, a uniformly random
    order (Castro et al. 2009); they come in pairs pi, reverse(pi)
    (antithetic sampling, Mitchell et al. 2022; shap's
    PermutationExplainer does the same), an odd K ending with one order
    alone. Each permutation telescopes to f(full) - f(empty), so
    efficiency holds exactly at any K. Rows per response: empty + full
    + K (T-1) prefixes in between, at most (a repeat is scored once).
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    B, T, K = real.shape[0], real.shape[1], config.shap_permutations
    generator = torch.Generator().manual_seed(config.seed)
    forward = random_ranks(real, (K + 1) // 2, generator)  # (B, ceil(K/2), T)
    paired = forward[:, : K // 2]  # (B, K/2, T)
    reverse = lengths[:, None, None] - 1 - paired  # its place in reverse(pi)
    backward = torch.where(real[:, None], reverse, paired)  # padding keeps its rank
    rank = torch.cat([forward, backward], 1)  # (B, K, T)
    sizes = torch.arange(1, T)  # (T-1,) prefix sizes k, 0 < k < T
    prefix = rank[:, :, None, :] < sizes[:, None]  # (B, K, T-1, T) first k of p
    inner = sizes < lengths[:, None, None]  # (B, 1, T-1) k < T_i: not full
    inner = inner.expand(B, K, T - 1)  # (B, K, T-1)
    # The rows scored, in this order (the slices of `values` rely on it):
    # [0, B) the empty coalition of each response, [B, 2B) the full
    # response, [2B, N) the inner prefixes (response, permutation, size)
    responses = torch.arange(B)  # (B,)
    per_prefix = responses[:, None, None].expand(B, K, T - 1)
    inner_owner = per_prefix[inner]  # (N - 2B,)
    owner = torch.cat([responses, responses, inner_owner])  # (N,)
    visible = torch.cat([torch.zeros_like(real), real, prefix[inner]])  # (N, T)
    game = prompts, pieces, owner, visible
    values, rows = score_coalitions(*game, reward_fn, config, dedupe=True)
    empty, full = values[:B], values[B : 2 * B]  # (B,) each
    inner_values = values[2 * B :]  # (N - 2B,)
    chain = full[:, None, None].repeat(1, K, T + 1)  # (B, K, T+1) f(first k of p)
    chain[:, :, 0] = empty[:, None]
    chain[:, :, 1:T][inner] = inner_values
    after = chain.gather(2, rank + 1)  # (B, K, T) f(Pre_p(t) + t)
    before = chain.gather(2, rank)  # (B, K, T) f(Pre_p(t))
    marginal = after - before  # (B, K, T)
    return (marginal.mean(1) * real).float(), rows


def shap_library(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """The shap package: PermutationExplainer over binary masks,
    all-masked background.

    One explainer per response (the mask width is its length). Its
    antithetic pairs cost 2T+1 rows each, so max_evals = K/2 (2T+1)
    gives it the permutations of `shap_batched`. shap seeds numpy's
    global generator; the caller's numpy state is restored afterwards.
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    phi = torch.zeros(real.shape, dtype=torch.float64)  # (B, T)
    rows, numpy_state = 0, np.random.get_state()
    for i, n in enumerate(lengths.tolist()):

        def model(masks: np.ndarray, i: int = i) -> np.ndarray:  # (N, n) in {0, 1} -> (N,)
            nonlocal rows
            owner = torch.full((len(masks),), i)  # (N,)
            visible = torch.as_tensor(masks) > 0.5  # (N, n)
            game = prompts, pieces, owner, visible
            values, used = score_coalitions(*game, reward_fn, config)
            rows += used
            return values.numpy()

        masker = shap.maskers.Independent(np.zeros((1, n)))
        explainer = shap.PermutationExplainer(model, masker, seed=config.seed + i)
        evals = config.shap_permutations // 2 * (2 * n + 1)
        ones = np.ones((1, n))  # explain the full response
        explanation = explainer(ones, max_evals=evals, silent=True)
        phi[i, :n] = torch.as_tensor(explanation.values[0])
    np.random.set_state(numpy_state)
    return phi.float(), rows


# ---- 2. LIME: a kernel-weighted ridge surrogate on random masks
def lime_kernel(distances: np.ndarray, width: float) -> np.ndarray:
    """lime's text kernel pi = sqrt(exp(-d^2 / width^2)), d = 100 x
    cosine distance to the full response."""
    return np.sqrt(np.exp(-(distances**2) / width**2))


def lime_batched(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """All neighbourhoods in one reward call, all surrogates in one
    batched solve:

        [beta_0, beta] = argmin sum_s pi(z_s) (f(z_s) - beta_0 - beta . z_s)^2 + alpha |beta|^2
                       = (X^T W X + alpha D)^-1 X^T W f,   X = [1, Z],  D = diag(0, 1, ..., 1)

    Same neighbourhood law as lime's text explainer: sample 0 is the
    full response, each other sample hides k ~ U{1..T} random tokens; a
    repeated sample is scored once. Padding columns of Z are 0 and get
    a unit ridge term, which pins their coefficients to 0.
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    B, T, S = real.shape[0], real.shape[1], config.lime_samples
    generator = torch.Generator().manual_seed(config.seed)
    draws = torch.rand(B, S - 1, generator=generator)  # (B, S-1)
    n_hidden = (draws * lengths[:, None]).long() + 1  # (B, S-1) k
    ranks = random_ranks(real, S - 1, generator)  # (B, S-1, T)
    hidden = ranks < n_hidden[..., None]  # (B, S-1, T)
    full = real[:, None]  # (B, 1, T)
    visible = torch.cat([full, full & ~hidden], 1)  # (B, S, T) Z
    owner = torch.arange(B).repeat_interleave(S)  # (N,) = (B S,)
    flat = visible.view(-1, T)  # (N, T)
    game = prompts, pieces, owner, flat
    values, rows = score_coalitions(*game, reward_fn, config, dedupe=True)
    shown = visible.sum(-1) / lengths[:, None]  # (B, S)
    distances = 100 * (1 - shown.sqrt())  # (B, S)
    kernel = lime_kernel(distances.double().numpy(), config.lime_kernel_width)
    weights = torch.as_tensor(kernel)  # (B, S) W
    ones = torch.ones(B, S, 1, dtype=torch.float64)  # (B, S, 1)
    X = torch.cat([ones, visible.double()], -1)  # (B, S, T+1)
    penalty = torch.where(real, config.lime_ridge_alpha, 1.0).double()  # (B, T)
    zero = torch.zeros(B, 1, dtype=torch.float64)  # (B, 1)
    penalty = torch.cat([zero, penalty], 1)  # (B, T+1)
    D = torch.diag_embed(penalty)  # (B, T+1, T+1) alpha D
    Xt = X.transpose(1, 2)  # (B, T+1, S)
    gram = Xt @ (weights[..., None] * X) + D  # (B, T+1, T+1)
    Wf = (weights * values.view(B, S))[..., None]  # (B, S, 1)
    target = Xt @ Wf  # (B, T+1, 1)
    beta = torch.linalg.solve(gram, target)[:, 1:, 0]  # (B, T)
    return (beta * real).float(), rows


def lime_library(prompts, pieces, reward_fn, config) -> tuple[torch.Tensor, int]:
    """The lime package: LimeBase (lime's kernel-weighted ridge) over
    binary token masks.

    Not LimeTextExplainer: it re-splits raw text with a regex, so its
    features cannot be the policy's tokens (BPE pieces, an EOS with no
    text, a prompt that must stay visible). The neighbourhood is drawn
    as its text explainer draws it, from one generator seeded per call,
    one reward call per response (as lime's classifier_fn sees it),
    regressing the reward.
    """
    lengths, real = real_tokens(pieces)  # (B,), (B, T)
    S, rng = config.lime_samples, np.random.RandomState(config.seed)
    explainer = LimeBase(lambda d: lime_kernel(d, config.lime_kernel_width), random_state=config.seed)
    beta = torch.zeros(real.shape, dtype=torch.float64)  # (B, T)
    for i, n in enumerate(lengths.tolist()):
        masks = np.ones((S, n))  # (S, n) row 0: the full response
        draws = rng.randint(1, n + 1, S - 1)  # (S-1,) k hidden
        for row, k in enumerate(draws, start=1):
            masks[row, rng.choice(n, k, replace=False)] = 0
        owner = torch.full((S,), i)  # (S,)
        visible = torch.as_tensor(masks) > 0.5  # (S, n)
        game = prompts, pieces, owner, visible
        values, _ = score_coalitions(*game, reward_fn, config)  # (S,)
        cosine = pairwise_distances(masks, masks[:1], metric="cosine")
        distances = cosine.ravel() * 100  # (S,)
        ridge = Ridge(alpha=config.lime_ridge_alpha)
        scores = values.numpy()[:, None]  # (S, 1)
        _, coefficients, _, _ = explainer.explain_instance_with_data(
            masks, scores, distances, 0, n, feature_selection="none", model_regressor=ridge
        )
        for feature, coefficient in coefficients:
            beta[i, feature] = coefficient
    return beta.float(), len(lengths) * S


# ---- 3. Attention credit (ABC, Chan et al. 2024)
def reads_last_token(config) -> bool:
    """Decoder RMs score at the last real token, encoder RMs (BERT) at
    the first ([CLS])."""
    model_type = getattr(config, "model_type", "")
    return bool(getattr(config, "is_decoder", False)) or (
        model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


@torch.no_grad()
def readout_attention(reward_model, encoded, max_rows: int) -> torch.Tensor:
    """A[r, :] (B, L), the last layer's attention averaged over heads,
    from the read-out position r."""
    readout_rows = []
    device = next(reward_model.parameters()).device
    for start in range(0, len(encoded["input_ids"]), max_rows):
        chunk = {k: v[start : start + max_rows].to(device) for k, v in encoded.items()}
        attentions = reward_model(**chunk, output_attentions=True).attentions
        if not attentions or attentions[-1] is None:
            eager = "load it with attn_implementation='eager'"
            raise ValueError(f"the RM returned no attentions: {eager}")
        mask = chunk["attention_mask"]  # (b, L)
        if reads_last_token(reward_model.config):  # the last real token
            readout = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # (b,)
        else:  # the first
            readout = mask.argmax(1)  # (b,)
        heads_mean = attentions[-1].mean(1)  # (b, L, L)
        batch = torch.arange(len(readout), device=device)  # (b,)
        readout_rows.append(heads_mean[batch, readout].cpu())  # (b, L)
    return torch.cat(readout_rows).double()  # (B, L)


def attention_credit(prompts, pieces, reward_model, reward_tokenizer, max_rows) -> tuple[torch.Tensor, int]:
    """Attention credit, normalised over the response (sum_t alpha_t = 1):

        alpha_t ~ sum_l A[r, l] share(l, t)

    A = last-layer attention averaged over heads, r = the RM's read-out
    position, l = RM tokens; share(l, t) splits RM token l evenly over
    the policy tokens t it overlaps (`rm_tokens`). A response whose
    pieces get no attention at all (e.g. only an EOS) gets a zero row.
    """
    limit = getattr(reward_model.config, "max_position_embeddings", None)
    encoded, overlap = rm_tokens(prompts, pieces, reward_tokenizer, limit)  # (B, L), (B, L, T)
    attention = readout_attention(reward_model, encoded, max_rows)  # (B, L)
    spread = overlap.sum(-1, keepdim=True).clamp_min(1)  # (B, L, 1)
    share = overlap.double() / spread  # (B, L, T) share(l, t)
    alpha = (attention[:, None, :] @ share)[:, 0]  # (B, T)
    total = alpha.sum(1, keepdim=True).clamp_min(1e-30)  # (B, 1)
    return (alpha / total).float(), len(pieces)


# ---- 4. Entry points: token ids, or the texts a caller decoded
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
    """Attributions (B, T) over response pieces, T = the longest T_i,
    zero past each; and the RM rows used.

    prompts, pieces: `response_texts`' output (decode a batch once,
    explain it by several methods). "shap" and "lime" need `reward_fn`
    (a coalitions.RewardFn); "attention" needs the RM and its tokenizer
    (loaded with eager attention). config: an AttributionConfig (None:
    the defaults).
    """
    config = config or AttributionConfig()
    if method not in METHODS:
        expected = f"expected one of {METHODS}"
        raise ValueError(f"unknown attribution method {method!r}; {expected}")
    empty = not pieces or min(map(len, pieces)) == 0
    if len(prompts) != len(pieces) or empty:
        got = f"got {len(prompts)} prompts, {len(pieces)} responses"
        raise ValueError(f"{got}; expected as many, none empty")
    if method == "attention":
        if reward_model is None or reward_tokenizer is None:
            needs = "needs reward_model and reward_tokenizer"
            raise ValueError(f"method 'attention' {needs}; got None")
        rows = config.max_rows_per_call
        return attention_credit(prompts, pieces, reward_model, reward_tokenizer, rows)
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
    """Attributions (B, T) over the policy's response tokens, zero
    outside the mask, and the RM rows used.

    `coalitions.response_texts` then `attribute_texts`; to explain one
    batch by several methods, call those two directly and decode once.
    """
    prompts, pieces = response_texts(tokenizer, prompt_ids, response_ids, response_mask)
    rm = reward_model, reward_tokenizer
    values, rows = attribute_texts(method, prompts, pieces, reward_fn, config, *rm)
    mask = response_mask  # (B, T)
    attributions = torch.zeros(mask.shape, device=mask.device)  # (B, T)
    attributions[:, : values.shape[1]] = values
    return attributions, rows
