"""The game SHAP and LIME explain: which response tokens the RM sees.

The players are the policy's response tokens. A coalition S of
response i shows the tokens in S and hides the others; its value is
the RM's score of that text (docs/method.md, section 2):

    v(S) = f(x_i, concat_t (piece_t if t in S else mask(piece_t)))

A hidden piece becomes the mask string (or is deleted), so the policy's
and the RM's tokenizers may differ. Where the RM reads the policy's
tokens one to one, a `TokenReward` builds the same RM input as ids. RM
tokens reach policy tokens through character offsets (`rm_tokens`: the
id path here, attention credit in reward_attribution.py).

Shapes: B responses, T the longest response in policy tokens (T_i of
response i), N rows (coalitions) handed to the reward function, L RM
tokens.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

# (prompts, responses) -> scores (N,)
RewardFn = Callable[[list[str], list[str]], torch.Tensor]


def response_texts(tokenizer, prompt_ids, response_ids, response_mask) -> tuple[list[str], list[list[str]]]:
    """Prompt texts and, per response, the text piece of each real
    response token:

        piece_t = decode(x + y_{<=t}) minus decode(x + y_{<t})

    so prompt + "".join(pieces) is the decoded full text. Special tokens
    (EOS) decode to an empty piece. Boundaries are positions in the full
    text (the longest prefix each partial decode shares with it), which
    also keeps a byte-level BPE character split over two tokens whole,
    in the later piece.
    """
    mask = response_mask  # (B, T)
    if mask.ndim != 2 or mask.shape != response_ids.shape:
        shapes = tuple(mask.shape), tuple(response_ids.shape)
        names = "response_mask and response_ids"
        raise ValueError(f"{names} have shapes {shapes}; expected one (B, T) shape")
    lengths = mask.sum(1).long()  # (B,) T_i
    places = torch.arange(mask.shape[1], device=mask.device)  # (T,)
    is_run = torch.equal(mask.bool(), places < lengths[:, None])
    if not is_run or (lengths == 0).any():
        rows = mask.long().tolist()
        run = "a non-empty run from position 0, then 0"
        raise ValueError(f"response_mask must be 1 on {run}; got {rows}")
    prompts, pieces = [], []
    batch = zip(prompt_ids.tolist(), response_ids.tolist(), lengths.tolist())
    for prompt, response, n in batch:
        partial = [prompt + response[:t] for t in range(n + 1)]  # x + y_{<t}
        prefixes = tokenizer.batch_decode(partial, skip_special_tokens=True)
        full = prefixes[-1]
        shared = [len(os.path.commonprefix([p, full])) for p in prefixes]
        bounds = np.maximum.accumulate(shared)  # (T_i + 1,)
        prompts.append(full[: bounds[0]])
        spans = zip(bounds[:-1], bounds[1:])
        pieces.append([full[start:end] for start, end in spans])
    return prompts, pieces


def masked_piece(piece: str, mask_string: str | None) -> str:
    """A hidden piece keeps its leading whitespace, the rest becomes
    the mask string (None or "": the piece is deleted)."""
    if not mask_string or not piece.strip():
        return piece if mask_string else ""
    indent = piece[: len(piece) - len(piece.lstrip())]
    return indent + mask_string


def real_tokens(pieces: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths T_i (B,) and the mask of real token positions (B, T)
    for ragged pieces."""
    lengths = torch.tensor([len(row) for row in pieces])  # (B,)
    places = torch.arange(int(lengths.max()))  # (T,)
    return lengths, places < lengths[:, None]


def random_ranks(real: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n uniformly random orders of each response's real tokens: the
    rank (B, n, T) of each token.

    Padding positions rank last (>= T_i), so `rank < k` picks k real
    tokens.
    """
    B, T = real.shape
    keys = torch.rand(B, n, T, generator=generator)  # (B, n, T)
    keys = keys.masked_fill(~real[:, None], float("inf"))
    return keys.argsort(-1).argsort(-1)  # (B, n, T)


@dataclass
class TokenReward:
    """f over the RM's token ids, for an RM that reads the policy's
    tokens one to one (`coalition_inputs`)."""

    tokenizer: object  # the RM's tokenizer
    # (input_ids, attention_mask), both (N, L) -> scores (N,)
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    max_length: int | None = None  # max_position_embeddings


def rm_tokens(prompts, pieces, tokenizer, max_length) -> tuple[dict, torch.Tensor]:
    """The RM's encoding of each full text (B, L) and overlap (B, L, T):
    RM token l spans characters of policy token t (RM special and prompt
    tokens overlap none). A text over max_length RM tokens: an error."""
    texts = [p + "".join(row) for p, row in zip(prompts, pieces)]
    encoded = tokenizer(texts, return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")  # (B, L, 2) span of each
    sizes = encoded["attention_mask"].sum(1)  # (B,)
    too_long = sizes > (max_length or float("inf"))  # (B,)
    if too_long.any():
        i = int(too_long.nonzero()[0])
        limit = f"max_position_embeddings={max_length}"
        raise ValueError(f"response {i} is over {limit} RM tokens: {texts[i]!r}")
    _, real = real_tokens(pieces)  # (B, T)
    T = real.shape[1]
    # characters of the prompt, then of each piece (0 past the response)
    rows = zip(prompts, pieces)
    widths = [[len(p), *map(len, r)] + [0] * (T - len(r)) for p, r in rows]
    bounds = torch.tensor(widths).cumsum(1)  # (B, T+1) piece t: [b_t, b_t+1)
    starts = bounds[:, None, :-1]  # (B, 1, T)
    ends = bounds[:, None, 1:]  # (B, 1, T)
    rm_starts = offsets[..., 0, None]  # (B, L, 1)
    rm_ends = offsets[..., 1, None]  # (B, L, 1)
    overlap = (rm_starts < ends) & (starts < rm_ends)  # (B, L, T)
    return encoded, overlap & real[:, None]


def coalition_inputs(prompts, pieces, owner, visible, token_reward, mask_string) -> tuple[torch.Tensor, ...]:
    """The RM's input ids and attention mask (N, L) of each coalition,
    built as ids (`TokenReward`).

    Where each policy token with text is one RM token (checked, refused
    otherwise), whitespace in none and the mask string one (a word-level
    tokenizer shared with the policy, as on the embedded task), the full
    text's encoding with hidden tokens' ids made the mask's is what the
    text path tokenizes.
    """
    tokenizer, limit = token_reward.tokenizer, token_reward.max_length
    encoded, overlap = rm_tokens(prompts, pieces, tokenizer, limit)
    T = overlap.shape[2]  # overlap (B, L, T)
    pad = [[0] * (T - len(row)) for row in pieces]
    text = [[int(bool(p.strip())) for p in row] for row in pieces]
    has_text = torch.tensor([a + b for a, b in zip(text, pad)])  # (B, T)
    one_each = (overlap.sum(2) <= 1).all()  # RM token: <= 1 policy token
    one_to_one = one_each and torch.equal(overlap.sum(1), has_text)
    mask_ids = tokenizer(mask_string or "", add_special_tokens=False)["input_ids"]
    if not one_to_one or len(mask_ids) != 1:
        raise ValueError(
            "the RM does not read the policy's tokens one to one (or the mask string is not "
            "one RM token): score texts with a RewardFn"
        )
    N, n = visible.shape  # the library backends show n = T_i columns
    past = visible.new_zeros(N, T - n)  # (N, T - n) past T_i: no RM token
    shown = torch.cat([visible, past], 1)[:, None, :]  # (N, 1, T)
    hidden = (overlap[owner] & ~shown).any(2)  # (N, L) hidden RM tokens
    ids = encoded["input_ids"][owner]  # (N, L)
    attention_mask = encoded["attention_mask"][owner]  # (N, L)
    return ids.masked_fill(hidden, mask_ids[0]), attention_mask


class Rows(NamedTuple):
    """N rows to score, on either path: each row's length (to sort by,
    for little padding), `score(picked)` giving the scores (n,) of the
    n rows at indices `picked`, and `describe(row)` naming the input of
    one row in an error."""

    lengths: list[int]
    score: Callable[[list[int]], torch.Tensor]
    describe: Callable[[int], str]


def text_rows(prompts, pieces, owner, visible, reward_fn, mask_string) -> Rows:
    """The text path: each row's prompt and coalition text, a hidden
    piece as `masked_piece` makes it, for a RewardFn."""
    hidden = [[masked_piece(p, mask_string) for p in row] for row in pieces]
    row_prompts = [prompts[i] for i in owner.tolist()]  # N texts
    texts = []  # N texts: the response each row shows
    for i, row in zip(owner.tolist(), visible.tolist()):
        parts = zip(pieces[i], hidden[i], row)
        texts.append("".join(p if shown else m for p, m, shown in parts))
    lengths = [len(p) + len(t) for p, t in zip(row_prompts, texts)]

    def score(picked: list[int]) -> torch.Tensor:
        first = [row_prompts[row] for row in picked]
        return reward_fn(first, [texts[row] for row in picked])

    def describe(row: int) -> str:
        return f"{row_prompts[row]!r}, {texts[row]!r}"

    return Rows(lengths, score, describe)


def id_rows(prompts, pieces, owner, visible, token_reward, mask_string) -> Rows:
    """The id path: each row's RM input ids and attention mask, for a
    TokenReward (`coalition_inputs`)."""
    game = prompts, pieces, owner, visible
    ids, mask = coalition_inputs(*game, token_reward, mask_string)  # (N, L)

    def score(picked: list[int]) -> torch.Tensor:
        return token_reward.score(ids[picked], mask[picked])  # (n, L)

    def describe(row: int) -> str:
        return f"{ids[row]!r}, {mask[row]!r}"

    return Rows(mask.sum(1).tolist(), score, describe)


def score_rows(rows: Rows, max_rows: int) -> torch.Tensor:
    """Every row's score (N,) float64, by length (little padding), at
    most max_rows rows a call. A score of the wrong shape or not finite
    is an error; the first non-finite row in scoring order is named."""
    order = sorted(range(len(rows.lengths)), key=rows.lengths.__getitem__)
    values = torch.zeros(len(order), dtype=torch.float64)  # (N,)
    for start in range(0, len(order), max_rows):
        picked = order[start : start + max_rows]
        chunk = torch.as_tensor(rows.score(picked))  # (n,)
        if chunk.shape != (len(picked),):
            got = f"shape {tuple(chunk.shape)}"
            raise ValueError(f"reward_fn returned {got}; expected ({len(picked)},)")
        values[picked] = chunk.double()
    bad = (~torch.isfinite(values[order])).nonzero()
    if len(bad):
        row = order[int(bad[0])]
        got = values[row].item()
        raise ValueError(f"reward_fn returned {got} for {rows.describe(row)}")
    return values


def score_coalitions(
    prompts, pieces, owner, visible, reward_fn, config, dedupe=False
) -> tuple[torch.Tensor, int]:
    """v(S) per row (N,) float64: f(x_i, y_i showing only the `visible`
    tokens), and the RM rows that took.

    owner (N,) is the response of each row, visible (N, T) its shown
    tokens; reward_fn a RewardFn (texts) or a TokenReward (ids); config
    an AttributionConfig (its mask_string, max_rows_per_call). With
    `dedupe`, a coalition drawn twice is scored once (random masks of
    short responses repeat often); the library backends score every
    row, as their packages do. reward_fn gets at most
    config.max_rows_per_call rows at once, by length (little padding).
    """
    inverse = torch.arange(len(owner))  # (N,)
    if dedupe:
        keyed = torch.cat([owner[:, None], visible.long()], 1)  # (N, 1+T)
        keys, inverse = torch.unique(keyed, dim=0, return_inverse=True)
        owner, visible = keys[:, 0], keys[:, 1:].bool()  # the distinct rows
    build = id_rows if isinstance(reward_fn, TokenReward) else text_rows
    game = prompts, pieces, owner, visible
    rows = build(*game, reward_fn, config.mask_string)
    values = score_rows(rows, config.max_rows_per_call)  # (N,)
    return values[inverse], len(owner)
