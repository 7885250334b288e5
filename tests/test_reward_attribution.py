"""Tests for reward_attribution.py: SHAP and LIME backends against exact answers and each other,
attention rows through a tokenizer mismatch, and the errors. The word-level game (tokenizers,
prompts, responses) is test_coalitions.py's."""

import numpy as np
import pytest
import torch
from test_coalitions import PROMPTS, RESPONSES, VALUES, bpe_tokenizer, embedded_ids, encode, word_tokenizer
from transformers import BertConfig, BertForSequenceClassification, GPT2Config
from transformers.modeling_outputs import SequenceClassifierOutput

import coalitions
import reward_attribution as ra
import scoring


def additive_reward(prompts: list[str], responses: list[str]) -> torch.Tensor:
    """f = number of prompt words + sum of word values ([UNK] and unknown words are 0)."""
    return torch.tensor(
        [len(p.split()) + sum(VALUES.get(w, 0.0) for w in r.split()) for p, r in zip(prompts, responses)]
    )


def negating_reward(prompts: list[str], responses: list[str]) -> torch.Tensor:
    """Word values, flipped when the word before is 'not': a game with pairwise interactions only."""
    scores = []
    for response in responses:
        words = response.split()
        scores.append(
            sum(VALUES.get(w, 0.0) * (-1 if i and words[i - 1] == "not" else 1) for i, w in enumerate(words))
        )
    return torch.tensor(scores)


def additive_truth(responses: list[str], T: int) -> torch.Tensor:
    return torch.tensor([[VALUES[w] for w in r.split()] + [0.0] * (T - len(r.split())) for r in responses])


@pytest.mark.parametrize("backend", ra.SHAP_BACKENDS)
@pytest.mark.parametrize("mask_string", ["[UNK]", None])
def test_every_shap_backend_is_exact_on_an_additive_reward(backend, mask_string):
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    config = ra.AttributionConfig(shap_backend=backend, mask_string=mask_string)
    phi, rows = ra.attribute("shap", tokenizer, *ids, additive_reward, config)
    assert torch.allclose(phi, additive_truth(RESPONSES, ids[1].shape[1]), atol=1e-5)
    lengths = ids[2].sum(1)
    pairs = config.shap_permutations // 2  # antithetic pairs per response
    if backend == "batched":  # at most K (T-1) + 2 per response: a repeated coalition is scored once
        assert 2 * len(RESPONSES) < rows <= (2 * pairs * (lengths - 1) + 2).sum() <= 2 * pairs * lengths.sum()
    else:
        assert rows == {"exact": (2**lengths).sum(), "library": (pairs * (2 * lengths + 1)).sum()}[backend]


@pytest.mark.parametrize("backend", ["batched", "library"])
def test_one_antithetic_pair_is_exact_for_pairwise_interactions(backend):
    """A permutation and its reverse give every pair's interaction half to each token."""
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    exact, _ = ra.attribute(
        "shap", tokenizer, *ids, negating_reward, ra.AttributionConfig(shap_backend="exact")
    )
    config = ra.AttributionConfig(shap_backend=backend, shap_permutations=2, seed=3)
    sampled, _ = ra.attribute("shap", tokenizer, *ids, negating_reward, config)
    assert torch.allclose(sampled, exact, atol=1e-5)
    # "not great": f = 2 [great] - 4 [not][great]; the -4 is split between the two tokens
    assert exact[0, 1].item() == pytest.approx(-2) and exact[0, 2].item() == pytest.approx(0)


def test_a_single_order_gives_each_token_its_marginal_contribution_in_that_order():
    """K = 1: one random order per response, no reverse. In "was not great ...", f = 2 [great] -
    4 [not][great] on that pair: "not" first gives (not, great) = (0, -2), "great" first (-4, +2);
    an additive token gets its value in any order, and every order telescopes to f(full) - f(empty)."""
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    prompts, pieces = coalitions.response_texts(tokenizer, *ids)
    gain = negating_reward(prompts, ["".join(row) for row in pieces]).double()  # f(empty) = 0 here
    orders = set()
    for seed in range(8):
        config = ra.AttributionConfig(shap_permutations=1, seed=seed)
        phi, rows = ra.attribute("shap", tokenizer, *ids, negating_reward, config)
        pair = (phi[0, 1].item(), phi[0, 2].item())
        assert pair in {(0.0, -2.0), (-4.0, 2.0)} and phi[0, 7].item() == 3.0  # superb
        assert torch.allclose(phi.double().sum(1), gain, atol=1e-6)
        assert rows <= (ids[2].sum(1) + 1).sum()  # empty + full + T - 1 prefixes per response
        orders.add(pair)
    assert len(orders) == 2  # the order is drawn, not fixed
    for k in (1, 3):  # an odd K is exact on an additive game, like any K
        phi, _ = ra.attribute(
            "shap", tokenizer, *ids, additive_reward, ra.AttributionConfig(shap_permutations=k)
        )
        assert torch.allclose(phi, additive_truth(RESPONSES, ids[1].shape[1]), atol=1e-5)


@pytest.mark.parametrize("backend", ra.LIME_BACKENDS)
def test_unregularised_lime_recovers_an_additive_reward(backend):
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    config = ra.AttributionConfig(lime_backend=backend, lime_ridge_alpha=0.0, lime_samples=64)
    beta, rows = ra.attribute("lime", tokenizer, *ids, additive_reward, config)
    assert torch.allclose(beta, additive_truth(RESPONSES, ids[1].shape[1]), atol=1e-4)
    assert rows == 64 * len(RESPONSES) if backend == "library" else rows < 64 * len(RESPONSES)  # repeats


def test_batched_sampling_is_seeded():
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    runs = [
        ra.attribute(method, tokenizer, *ids, negating_reward, ra.AttributionConfig(seed=seed))[0]
        for method in ("shap", "lime")
        for seed in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[3], runs[4])
    assert not torch.equal(runs[3], runs[5])  # a new seed draws a new LIME neighbourhood


def test_errors_name_the_problem():
    tokenizer = word_tokenizer()
    ids = encode(tokenizer, PROMPTS, RESPONSES)
    with pytest.raises(ValueError, match="'shap', 'lime', 'attention'"):
        ra.attribute("gradient", tokenizer, *ids, additive_reward)

    def broken_reward(prompts, responses):
        return torch.tensor([float("nan") if "dull" in r else 0.0 for r in responses])

    with pytest.raises(ValueError, match="' dull .'"):
        ra.attribute("shap", tokenizer, *ids, broken_reward)
    long_ids = encode(tokenizer, ["the plot"], [" ".join(["good"] * 15)])
    with pytest.raises(ValueError, match="16 tokens"):
        ra.attribute(
            "shap", tokenizer, *long_ids, additive_reward, ra.AttributionConfig(shap_backend="exact")
        )
    with pytest.raises(ValueError, match="shap_permutations=0; expected >= 1"):
        ra.AttributionConfig(shap_permutations=0)
    with pytest.raises(ValueError, match="expected an even number with shap_backend='library'"):
        ra.AttributionConfig(shap_permutations=3, shap_backend="library")
    with pytest.raises(ValueError, match="shap_backend"):
        ra.AttributionConfig(shap_backend="kernel")
    with pytest.raises(ValueError, match="reward_model"):
        ra.attribute("attention", tokenizer, *ids, additive_reward)


# ---------------------------------------------------------------------------------------
# Attention: a tiny BERT RM whose BPE tokenizer splits words into several pieces
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_rm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert-rm")
    tokenizer = bpe_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return BertForSequenceClassification.from_pretrained(
        folder, attn_implementation="eager"
    ).eval(), tokenizer


def test_attention_maps_through_a_tokenizer_mismatch(bert_rm):
    model, rm_tokenizer = bert_rm
    policy_tokenizer = word_tokenizer()
    ids = encode(policy_tokenizer, PROMPTS, RESPONSES)
    assert len(rm_tokenizer.tokenize("superb")) > 1  # the mismatch is real
    alpha, rows = ra.attribute(
        "attention", policy_tokenizer, *ids, None, reward_model=model, reward_tokenizer=rm_tokenizer
    )
    assert rows == len(PROMPTS) and torch.allclose(alpha.sum(1), torch.ones(3), atol=1e-6)
    assert (alpha[ids[2] == 0] == 0).all() and (
        alpha[torch.arange(3), ids[2].sum(1) - 1] == 0
    ).all()  # EOS: no text
    # reference: the [CLS] row summed over the RM pieces of each response word, renormalised
    text = PROMPTS[0] + " " + RESPONSES[0]
    encoded = rm_tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        cls_row = model(**encoded, output_attentions=True).attentions[-1][0].mean(0)[0]
    word_spans, start = [], len(PROMPTS[0])
    for word in RESPONSES[0].split():
        start = text.index(word, start)
        word_spans.append((start, start + len(word)))
        start += len(word)
    per_word = torch.tensor(
        [
            sum(cls_row[j].item() for j, (s, e) in enumerate(offsets) if e > s and s >= ws and e <= we)
            for ws, we in word_spans
        ]
    )
    assert torch.allclose(alpha[0, : len(word_spans)], per_word / per_word.sum(), atol=1e-6)


def test_attention_errors(bert_rm, monkeypatch):
    model, rm_tokenizer = bert_rm
    policy_tokenizer = word_tokenizer()
    long_ids = encode(policy_tokenizer, ["the plot"], [" ".join(["superb"] * 12)])
    with pytest.raises(ValueError, match="max_position_embeddings=40"):
        ra.attribute(
            "attention", policy_tokenizer, *long_ids, None, reward_model=model, reward_tokenizer=rm_tokenizer
        )
    # An RM that returns no attention weights, as SDPA does in transformers 5 (4.x falls back to eager).
    forward = model.forward
    no_attentions = lambda **inputs: SequenceClassifierOutput(logits=forward(**inputs).logits)  # noqa: E731
    monkeypatch.setattr(model, "forward", no_attentions)
    ids = encode(policy_tokenizer, PROMPTS, RESPONSES)
    with pytest.raises(ValueError, match="eager"):
        ra.attribute(
            "attention", policy_tokenizer, *ids, None, reward_model=model, reward_tokenizer=rm_tokenizer
        )
    assert ra.reads_last_token(GPT2Config()) and not ra.reads_last_token(model.config)


# ---------------------------------------------------------------------------------------
# The embedded task: its RM, the policy's tokenizer, demonstrations as responses
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(embedded_task):
    """Ids of 16 validation prompts with their demonstrations (<= 11 words + EOS) and the RM."""
    task = embedded_task
    ids = embedded_ids(task)

    def reward_fn(prompts, responses):
        return scoring.score(task.reward_model, task.reward_tokenizer, prompts, responses)

    return task, ids, reward_fn


def pooled_correlation(a: torch.Tensor, b: torch.Tensor, response_mask: torch.Tensor) -> float:
    real = response_mask.bool()
    return float(np.corrcoef(a[real].double().numpy(), b[real].double().numpy())[0, 1])


def test_batched_shap_matches_exact_shapley_and_is_efficient(embedded):
    task, ids, reward_fn = embedded
    tokenizer, lengths = task.policy_tokenizer, ids[2].sum(1)
    exact, _ = ra.attribute("shap", tokenizer, *ids, reward_fn, ra.AttributionConfig(shap_backend="exact"))
    batched, rows = ra.attribute("shap", tokenizer, *ids, reward_fn)
    assert pooled_correlation(batched, exact, ids[2]) >= 0.95 and rows <= 4 * lengths.sum()
    library, _ = ra.attribute(
        "shap", tokenizer, *[x[:4] for x in ids], reward_fn, ra.AttributionConfig(shap_backend="library")
    )
    # efficiency: sum_t phi_t = f(full) - f(all masked), for every backend
    prompts, pieces = coalitions.response_texts(tokenizer, *ids)
    full = reward_fn(prompts, ["".join(row) for row in pieces]).double()
    masked = reward_fn(
        prompts, ["".join(coalitions.masked_piece(p, "[UNK]") for p in row) for row in pieces]
    ).double()
    for phi in (exact, batched, library):
        assert torch.allclose(phi.double().sum(1), (full - masked)[: len(phi)], atol=1e-5)


def test_batched_lime_agrees_with_the_lime_package(embedded):
    """Two neighbourhoods drawn by the same law (256 samples each: 0.997 measured, 0.96 at 48)."""
    task, ids, reward_fn = embedded
    ids = [x[:12] for x in ids]
    batched, _ = ra.attribute(
        "lime", task.policy_tokenizer, *ids, reward_fn, ra.AttributionConfig(lime_samples=256)
    )
    library_config = ra.AttributionConfig(lime_backend="library", lime_samples=256)
    library, rows = ra.attribute("lime", task.policy_tokenizer, *ids, reward_fn, library_config)
    assert pooled_correlation(batched, library, ids[2]) >= 0.99 and rows == 12 * 256


def test_attention_rows_sum_to_one_on_the_embedded_rm(embedded):
    task, ids, reward_fn = embedded
    alpha, rows = ra.attribute(
        "attention",
        task.policy_tokenizer,
        *ids,
        None,
        reward_model=task.reward_model,
        reward_tokenizer=task.reward_tokenizer,
    )
    assert rows == len(ids[0]) and torch.allclose(alpha.sum(1), torch.ones(len(alpha)), atol=1e-6)
    assert (alpha >= 0).all() and (alpha[ids[2] == 0] == 0).all()


def test_attribute_texts_on_decoded_pieces_agrees_with_attribute(embedded):
    """Decoding once and explaining the texts by every method gives what `attribute` gives."""
    task, ids, reward_fn = embedded
    prompts, pieces = coalitions.response_texts(task.policy_tokenizer, *ids)
    for method in ra.METHODS:
        rm = (task.reward_model, task.reward_tokenizer)
        from_ids = ra.attribute(method, task.policy_tokenizer, *ids, reward_fn, None, *rm)
        from_texts = ra.attribute_texts(method, prompts, pieces, reward_fn, None, *rm)
        assert torch.equal(from_ids[0], from_texts[0]) and from_ids[1] == from_texts[1]
    with pytest.raises(ValueError, match="none empty"):
        ra.attribute_texts("shap", prompts, [[]] * len(prompts), reward_fn)


# ---------------------------------------------------------------------------------------
# The fast path: SDPA scores, and coalitions built as ids (test_coalitions.py) through it
# ---------------------------------------------------------------------------------------
def test_sdpa_view_scores_as_the_eager_rm_on_its_own_weights(embedded):
    """Coalition texts of 16 responses (every third token hidden, three ways) score the same to float
    tolerance through the eager RM and through its SDPA view, which holds the RM's own tensors."""
    task, ids, _ = embedded
    view = scoring.sdpa_view(task.reward_model)
    assert (view.config._attn_implementation, task.reward_model.config._attn_implementation) == (
        "sdpa",
        "eager",
    )
    assert all(a is b for a, b in zip(task.reward_model.parameters(), view.parameters()))
    prompts, pieces = coalitions.response_texts(task.policy_tokenizer, *ids)
    texts = [
        "".join(
            coalitions.masked_piece(piece, "[UNK]") if t % 3 == k else piece for t, piece in enumerate(row)
        )
        for row in pieces
        for k in range(3)
    ]
    row_prompts = [prompt for prompt in prompts for _ in range(3)]
    eager = scoring.score(task.reward_model, task.reward_tokenizer, row_prompts, texts)
    fast = scoring.score(view, task.reward_tokenizer, row_prompts, texts)
    assert torch.allclose(eager, fast, atol=1e-5) and eager.abs().max() > 1


def test_shap_and_lime_through_the_id_path_and_sdpa_equal_the_text_path(embedded):
    """What run.py wires on the embedded task gives the credit of the eager text path, to float tolerance."""
    task, ids, reward_fn = embedded
    view = scoring.sdpa_view(task.reward_model)
    token_reward = coalitions.TokenReward(
        task.reward_tokenizer, lambda i, m: scoring.score_ids(view, i, m), 64
    )
    for method in ("shap", "lime"):
        by_text, text_rows = ra.attribute(method, task.policy_tokenizer, *ids, reward_fn)
        by_ids, id_rows = ra.attribute(method, task.policy_tokenizer, *ids, token_reward)
        assert torch.allclose(by_text, by_ids, atol=1e-4) and text_rows == id_rows
