"""Tests for coalitions.py: response pieces, coalitions as texts and as RM ids, scoring them.

The word-level game here (tokenizers, prompts, responses) is test_reward_attribution.py's too."""

import re

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

import coalitions
import reward_attribution as ra
import task

SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]"]
VALUES = {
    "great": 2.0,
    "superb": 3.0,
    "good": 1.0,
    "bad": -2.0,
    "dull": -1.0,
    "not": 0.0,
    "the": 0.0,
    "plot": 0.0,
    "acting": 0.0,
    "was": 0.0,
    "but": 0.0,
    ".": 0.0,
}
PROMPTS = ["the plot", "the acting was", "the plot was"]
RESPONSES = ["was not great but the acting was superb .", "dull .", "not bad but not good"]


def word_tokenizer(first_token: str = "[BOS]") -> PreTrainedTokenizerFast:
    """The embedded task's kind of tokenizer, over the words of VALUES."""
    return task.make_tokenizer(first_token, "left", SPECIAL + list(VALUES))


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """An RM tokenizer that splits words into several pieces (`superb` among them)."""
    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=40, special_tokens=SPECIAL)
    backend.train_from_iterator([" ".join(VALUES)] * 3, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", backend.token_to_id("[CLS]"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        padding_side="right",
    )


def encode(tokenizer, prompts: list[str], responses: list[str]):
    """Left-padded prompt ids, right-padded response ids ending in EOS, and the response mask."""
    prompt_ids = tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"]
    rows = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    T = max(map(len, rows))
    response_ids = torch.tensor([row + [tokenizer.pad_token_id] * (T - len(row)) for row in rows])
    return prompt_ids, response_ids, (torch.arange(T) < torch.tensor([len(r) for r in rows])[:, None]).long()


def embedded_ids(task):
    """Ids of 16 validation prompts with their demonstrations (<= 11 words + EOS)."""
    pairs = [
        (p, task.demonstrations[p]) for p in task.val_prompts if len(task.demonstrations[p].split()) <= 11
    ][:16]
    return encode(task.policy_tokenizer, [p for p, _ in pairs], [d.strip() for _, d in pairs])


def test_response_texts_split_into_pieces_that_rebuild_the_text():
    tokenizer = word_tokenizer()
    prompts, pieces = coalitions.response_texts(tokenizer, *encode(tokenizer, PROMPTS, RESPONSES))
    assert prompts == PROMPTS
    assert pieces[1] == [" dull", " .", ""]  # EOS is a special token: an empty piece
    assert ["".join(row) for row in pieces] == [" " + r for r in RESPONSES]
    assert coalitions.masked_piece(" great", "[UNK]") == " [UNK]"
    assert coalitions.masked_piece(" great", None) == "" and coalitions.masked_piece("", "[UNK]") == ""


def test_response_texts_checks_the_mask_on_its_own_device():
    """Catches a tensor created without the device of the caller's response_mask where the
    mask is checked (`torch.arange(T) < lengths`): a mask on a GPU would make it fail. With the
    default device 'meta' and the inputs on the CPU, such a tensor lands on 'meta' and fails the
    same way. Only the boundary is checked: the SHAP and LIME internals build CPU tensors from
    Python lists on purpose, whatever device the caller uses."""
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    with torch.device("meta"):
        prompts, pieces = coalitions.response_texts(tokenizer, *ids)
    assert prompts == PROMPTS and ["".join(row) for row in pieces] == [" " + r for r in RESPONSES]


def test_byte_level_bpe_pieces_keep_a_split_character_whole():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        ["the plot was great"],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["[PAD]", "[EOS]"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="[EOS]")
    prompts, pieces = coalitions.response_texts(
        tokenizer, *encode(tokenizer, ["the plot"], [" was café great"])
    )
    assert prompts == ["the plot"]  # "é" is two byte tokens: the first gets "", the second the character
    assert pieces == [[" was", " ", "c", "a", "f", "", "é", " great", ""]]


def test_both_paths_score_shortest_first_in_chunks_and_name_the_first_bad_row():
    """Four coalitions scored two a call, through texts and through ids (the word-level RM
    tokenizer reads the policy's tokens one to one). f = sum of word values, by hand:
    (0) all of response 0: great + superb = 5, 50 characters and 12 RM tokens;
    (1) all of "dull .": -1, 21 and 6; (2) none of it: 0, 26 and 6;
    (3) only "not" of response 2: 0, 40 and 9. Both paths go shortest first, 1 2 | 3 0."""
    tokenizer = word_tokenizer()
    prompts, pieces = coalitions.response_texts(tokenizer, *encode(tokenizer, PROMPTS, RESPONSES))
    owner = torch.tensor([0, 1, 1, 2])
    visible = torch.zeros(4, 10, dtype=torch.bool)
    visible[0, :10], visible[1, :3], visible[3, 0] = True, True, True
    words = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    handed = {"texts": [], "ids": []}

    def text_values(prompt_texts, response_texts):
        handed["texts"].append(response_texts)
        rows = [(p + r).split() for p, r in zip(prompt_texts, response_texts)]
        return torch.tensor([sum(VALUES.get(w, 0.0) for w in row) for row in rows])

    def id_values(input_ids, attention_mask):  # (n, L) each, left-padded
        handed["ids"].append(attention_mask.sum(1).tolist())
        rows = [row[m > 0].tolist() for row, m in zip(input_ids, attention_mask)]
        return torch.tensor([sum(VALUES.get(words[i], 0.0) for i in row) for row in rows])

    config = ra.AttributionConfig(max_rows_per_call=2)
    game = prompts, pieces, owner, visible
    by_text, rows = coalitions.score_coalitions(*game, text_values, config)
    by_ids, _ = coalitions.score_coalitions(*game, coalitions.TokenReward(tokenizer, id_values), config)
    expected = torch.tensor([5.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(by_text, expected) and torch.equal(by_ids, expected) and rows == 4
    assert handed["texts"] == [
        [" dull .", " [UNK] [UNK]"],
        [" not [UNK] [UNK] [UNK] [UNK]", " was not great but the acting was superb ."],
    ]
    assert handed["ids"] == [[6, 6], [9, 12]]

    # NaN for the rows showing "not", 0 and 3: row 3 is scored first, so it is the one named
    def text_nan(prompt_texts, response_texts):
        return torch.tensor([float("nan") if "not" in r.split() else 0.0 for r in response_texts])

    def id_nan(input_ids, attention_mask):
        return torch.where((input_ids == tokenizer.convert_tokens_to_ids("not")).any(1), float("nan"), 0.0)

    with pytest.raises(ValueError, match=re.escape("nan for 'the plot was', ' not [UNK] [UNK] [UNK] [UNK]'")):
        coalitions.score_coalitions(*game, text_nan, config)
    row_ids = tokenizer("the plot was not [UNK] [UNK] [UNK] [UNK]")["input_ids"]  # 9 of L = 12
    pad = [tokenizer.pad_token_id] * 3
    row = f"{torch.tensor(pad + row_ids)!r}, {torch.tensor([0] * 3 + [1] * 9)!r}"
    with pytest.raises(ValueError, match=re.escape(f"nan for {row}")):
        coalitions.score_coalitions(*game, coalitions.TokenReward(tokenizer, id_nan), config)
    with pytest.raises(ValueError, match=re.escape("returned shape (3,); expected (2,)")):
        coalitions.score_coalitions(*game, lambda p, r: torch.zeros(3), config)


# ---------------------------------------------------------------------------------------
# The embedded task: coalitions built as ids where the RM reads the policy's tokens
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(embedded_task):
    return embedded_task, embedded_ids(embedded_task)


def row_key(ids: list[int]) -> float:
    """A number that tells RM inputs apart: a different id, or the same ids in other places, changes it."""
    return float(sum((place + 1) * 1.618**place * (token + 1) for place, token in enumerate(ids)))


def every_coalition(pieces) -> tuple[torch.Tensor, torch.Tensor]:
    """owner (N,) and visible (N, T) of all 2^T_i coalitions of each response."""
    lengths, real = coalitions.real_tokens(pieces)
    owner = torch.cat([torch.full((2**n,), i) for i, n in enumerate(lengths.tolist())])
    subsets = torch.cat([torch.arange(2**n) for n in lengths.tolist()])
    return owner, ((subsets[:, None] >> torch.arange(real.shape[1])) & 1) == 1


def test_coalition_ids_are_the_tokenized_coalition_texts(embedded):
    """All 2^T_i coalitions of 6 responses: the id path hands the RM the ids, in the places, that the
    text path's coalition texts tokenize to, right-padded as the RM's tokenizer pads."""
    task, ids = embedded
    prompts, pieces = coalitions.response_texts(task.policy_tokenizer, *[x[:6] for x in ids])
    owner, visible = every_coalition(pieces)
    tokenized, handed = [], []

    def text_keys(prompt_texts, response_texts):
        rows = task.reward_tokenizer([p + r for p, r in zip(prompt_texts, response_texts)])["input_ids"]
        tokenized.extend(rows)
        return torch.tensor([row_key(row) for row in rows], dtype=torch.float64)

    def id_keys(input_ids, attention_mask):  # (n, L) each
        handed.append(
            torch.equal(
                attention_mask.bool(), torch.arange(input_ids.shape[1]) < attention_mask.sum(1)[:, None]
            )
        )
        return torch.tensor(
            [row_key(row[m > 0].tolist()) for row, m in zip(input_ids, attention_mask)], dtype=torch.float64
        )

    config = ra.AttributionConfig(mask_string="[UNK]")
    by_text, _ = coalitions.score_coalitions(prompts, pieces, owner, visible, text_keys, config)
    by_ids, _ = coalitions.score_coalitions(
        prompts, pieces, owner, visible, coalitions.TokenReward(task.reward_tokenizer, id_keys), config
    )
    assert torch.equal(by_text, by_ids) and all(handed) and len(tokenized) == len(owner)
    hidden_words = sum(row.count(task.reward_tokenizer.unk_token_id) for row in tokenized)
    lengths, real = coalitions.real_tokens(pieces)
    has_text = torch.tensor(
        [[bool(p.strip()) for p in row] + [False] * (real.shape[1] - len(row)) for row in pieces]
    )
    assert (
        hidden_words == (~visible & has_text[owner]).sum() > 0
    )  # every hidden word, and only those, is [UNK]


def test_a_response_shown_by_its_own_width_scores_as_padded_to_the_batchs(embedded):
    """The library backends show response i's n = T_i columns, not the batch's T: both paths score such
    rows as the same coalitions padded with hidden columns."""
    task, ids = embedded
    prompts, pieces = coalitions.response_texts(task.policy_tokenizer, *[x[:6] for x in ids])
    lengths, real = coalitions.real_tokens(pieces)
    i = int(lengths.argmin())  # the shortest: n < T
    n, T = int(lengths[i]), real.shape[1]
    assert n < T
    visible = torch.rand(5, n, generator=torch.Generator().manual_seed(0)) > 0.5  # (5, n)
    padded = torch.cat([visible, torch.zeros(5, T - n, dtype=torch.bool)], 1)  # (5, T)
    owner = torch.full((5,), i)
    config = ra.AttributionConfig(mask_string="[UNK]")
    key = coalitions.TokenReward(task.reward_tokenizer, lambda ids, mask: (ids * mask).sum(1).double())
    for reward in (key, lambda p, r: torch.tensor([float(len(text)) for text in r])):
        own, _ = coalitions.score_coalitions(prompts, pieces, owner, visible, reward, config)
        wide, _ = coalitions.score_coalitions(prompts, pieces, owner, padded, reward, config)
        assert torch.equal(own, wide)


def test_the_id_path_refuses_what_it_cannot_build(embedded):
    task, ids = embedded
    prompts, pieces = coalitions.response_texts(task.policy_tokenizer, *[x[:2] for x in ids])
    owner, visible = every_coalition(pieces)
    deleting = ra.AttributionConfig(mask_string=None)  # a deleted token closes up: the text path's business
    with pytest.raises(ValueError, match="one to one"):
        coalitions.score_coalitions(
            prompts, pieces, owner, visible, coalitions.TokenReward(task.reward_tokenizer, None), deleting
        )
    bpe = bpe_tokenizer()
    assert len(bpe.tokenize("superb")) > 1  # several RM tokens for one policy token
    policy_tokenizer = word_tokenizer()
    prompts, pieces = coalitions.response_texts(
        policy_tokenizer, *encode(policy_tokenizer, PROMPTS, RESPONSES)
    )
    owner, visible = every_coalition(pieces)
    with pytest.raises(ValueError, match="one to one"):
        coalitions.score_coalitions(
            prompts, pieces, owner, visible, coalitions.TokenReward(bpe, None), ra.AttributionConfig()
        )
