"""The embedded task: tokenizer, ground truth, reward model, SFT policy, cache and loaders."""

import itertools
import math
import os
import random

import numpy as np
import pytest
import torch
import transformers

import reward_attribution as ra
import scoring
import task

SMALL = dict(n_reviews=400, n_train_prompts=8, n_val_prompts=4, rm_steps=3, sft_steps=3)


def test_tokenizer_round_trip_and_offsets():
    tokenizer = task.make_tokenizer("[CLS]", "right")
    text = "the plot was not great but the acting was superb ."
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc["input_ids"][0] == tokenizer.cls_token_id
    assert tokenizer.decode(enc["input_ids"], skip_special_tokens=True) == text
    words = [text[start:end] for start, end in enc["offset_mapping"][1:]]
    assert words == text.split()
    assert tokenizer("the qwerty plot")["input_ids"][2] == tokenizer.unk_token_id


def test_true_token_credit_by_hand():
    credit = task.true_token_credit("the plot", "was not great but the acting was superb .".split())
    assert credit.tolist() == [0, 0, -2, 0, 0, 0, 0, 3, 0]
    # a negation in the prompt reaches the response; an adverb lets it pass
    assert task.true_token_credit("the plot was not", ["very", "dull", "."]).tolist() == [0, 1, 0]
    # any other word cancels a pending negation
    assert task.true_token_credit("the film", ["was", "not", "the", "good", "[EOS]"]).tolist() == [
        0,
        0,
        0,
        1,
        0,
    ]


def test_masked_words_carry_no_sentiment():
    words = "the plot was not great .".split()
    assert task.token_scores(words).sum() == -2
    assert task.token_scores(words, [True, True, True, False, True, True]).sum() == 2  # hidden `not`
    assert task.token_scores(words, [True, True, True, True, False, True]).sum() == 0  # hidden adjective


def test_true_shapley_credit_by_hand():
    # `not great`, prompt always shown: v({}) = 0, v({great}) = 2, v({not}) = 0, v({not, great}) = -2
    # phi_not   = 1/2 [(v({not}) - v({})) + (v({not, great}) - v({great}))] = 1/2 [0 - 4] = -2
    # phi_great = 1/2 [(v({great}) - v({})) + (v({not, great}) - v({not}))] = 1/2 [2 - 2] = 0
    assert np.allclose(task.true_shapley_credit("the plot was", ["not", "great", "."]), [-2, 0, 0])
    # a `not` in the prompt is always shown: v({}) = 0, v({great}) = -2, so `great` takes all of it
    # (the adverb between passes the negation whether shown or hidden: a null player)
    assert np.allclose(task.true_shapley_credit("the plot was not", ["very", "great", "."]), [0, -2, 0])
    # no `not`: the game is additive, so the Shapley values are the lexicon values
    response = "was good and the acting was superb .".split()
    assert np.allclose(
        task.true_shapley_credit("the plot", response), task.true_token_credit("the plot", response)
    )
    # v is the mean over sentences: two sentences, no `not`, so each adjective's value over m = 2
    response = "great . the cast was dull .".split()
    assert np.allclose(task.true_shapley_credit("the plot was", response), [1, 0, 0, 0, 0, -0.5, 0])
    # not clipped: three strength-3 adjectives of one sentence give 9, each its own 3
    response = "superb and the acting was stunning and the score was brilliant .".split()
    credit = task.true_shapley_credit("the plot was", response)
    assert np.allclose(credit[[0, 5, 10]], 3) and np.allclose(np.delete(credit, [0, 5, 10]), 0)


def reference_shapley(prompt: str, response: list[str]) -> np.ndarray:
    """Every response token a player (null ones too), the Shapley sum over all subsets of review_value."""
    n, words = len(response), prompt.split() + response
    shown = [word not in task.SPECIAL_TOKENS for word in response]

    def value(subset):
        visible = [True] * (len(words) - n) + [shown[i] and i in subset for i in range(n)]
        return task.review_value(words, visible)

    phi = np.zeros(n)
    for t, k in itertools.product(range(n), range(n)):
        for subset in itertools.combinations([i for i in range(n) if i != t], k):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            phi[t] += weight * (value({*subset, t}) - value(set(subset)))
    return phi, value(set(range(n))) - value(set())


def test_true_shapley_credit_matches_full_enumeration_and_is_efficient():
    rng = random.Random(7)
    words_of = [
        lambda: task.random_review(rng),  # one sentence
        lambda: task.random_review(rng, (12, 30)),  # several: the response crosses sentences
        lambda: task.random_review(rng, (150, 165)),  # a long review, its last 9 tokens the response
        lambda: [rng.choice(["not", "not", "great", "dull", ".", "very", "the", "[UNK]"]) for _ in range(12)],
    ]
    for case in range(48):
        words = words_of[case % 4]()
        cut = rng.randint(0, 4) if case % 4 != 2 else len(words) - 9
        prompt, response = " ".join(words[:cut]), words[cut:][:9] + ["[EOS]"] * rng.randint(0, 1)
        credit = task.true_shapley_credit(prompt, response)
        reference, gain = reference_shapley(prompt, response)
        assert np.allclose(credit, reference, atol=1e-9)
        assert np.isclose(credit.sum(), gain)  # efficiency: sum_t phi_t = v(all) - v(prompt alone)


def test_true_shapley_credit_is_fast_and_efficient_at_any_length():
    rng = random.Random(3)
    for _ in range(20):
        words = task.random_review(rng, (150, 165))
        credit = task.true_shapley_credit("", words)
        assert np.isclose(credit.sum(), task.review_value(words))  # v(nothing shown) = 0
        # each sentence's credit is its own sentence's Shapley values over m
        m, start = task.n_sentences(words), 0
        for end in [i + 1 for i, word in enumerate(words) if word == task.END]:
            assert np.allclose(credit[start:end], task.true_shapley_credit("", words[start:end]) / m)
            start = end


@torch.no_grad()
def test_exact_shapley_of_the_rm_tracks_the_true_game(embedded_task):
    """A regression test of the RM build: it must have learnt the game, not only the labels."""
    tokenizer = embedded_task.policy_tokenizer
    prompts = embedded_task.val_prompts[:16]
    encoded = tokenizer(prompts, padding=True, return_tensors="pt")
    torch.manual_seed(0)
    output = embedded_task.policy.generate(
        **encoded, do_sample=True, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id
    )
    response_ids = output[:, encoded["input_ids"].shape[1] :]  # (B, T)
    is_eos = (response_ids == tokenizer.eos_token_id).long()
    response_mask = (is_eos.cumsum(1) - is_eos == 0).long()  # up to and including the first EOS

    def reward_fn(prompt_texts, responses):
        return scoring.score(
            embedded_task.reward_model, embedded_task.reward_tokenizer, prompt_texts, responses
        )

    config = ra.AttributionConfig(shap_backend="exact")
    phi, _ = ra.attribute(
        "shap", tokenizer, encoded["input_ids"], response_ids, response_mask, reward_fn, config
    )
    truth = torch.zeros(response_mask.shape)
    for i, (prompt, row, n) in enumerate(zip(prompts, response_ids.tolist(), response_mask.sum(1).tolist())):
        truth[i, :n] = torch.tensor(
            task.true_shapley_credit(prompt, tokenizer.convert_ids_to_tokens(row[:n]))
        )
    real = response_mask.bool()
    assert np.corrcoef(phi[real].numpy(), truth[real].numpy())[0, 1] >= 0.9


def test_generator_is_seeded_and_never_ties():
    first = [task.random_review(random.Random(3)) for _ in range(3)]
    assert first == [task.random_review(random.Random(3)) for _ in range(3)]
    rng = random.Random(0)
    assert all(task.token_scores(task.random_review(rng)).sum() != 0 for _ in range(500))
    for low, high in [(11, 17), (93, 111), (143, 161)]:  # sized reviews: whole sentences, in the range
        for words in [task.random_review(rng, (low, high)) for _ in range(50)]:
            assert low <= len(words) <= high and words[-1] == task.END
            assert task.n_sentences(words) == words.count(task.END) >= 1


def test_a_sentence_ends_a_negation_and_the_value_is_a_mean_over_sentences():
    words = "the plot was not . great .".split()  # not a generated review, but a `.` ends the `not`
    assert task.token_scores(words).tolist() == [0, 0, 0, 0, 0, 2, 0]
    assert task.token_scores(words, [True] * 4 + [False, True, True]).tolist() == [0, 0, 0, 0, 0, 2, 0]
    sentence = "the plot was great .".split()
    assert task.review_value(sentence * 7) == task.review_value(sentence) == 2  # not 7 x 2
    assert task.n_sentences("the plot was great . the cast".split()) == 2  # a response cut short


def test_vocabulary_size_and_demonstrations(embedded_task):
    assert 240 <= len(task.VOCABULARY) <= 260
    for prompt in embedded_task.val_prompts[:50]:
        demonstration = embedded_task.demonstrations[prompt]
        assert demonstration.startswith(" ") and demonstration.endswith(" .")
        words = (prompt + demonstration).split()
        assert task.token_scores(words).sum() > 0, "demonstrations are positive reviews"
    assert not set(embedded_task.train_prompts) & set(embedded_task.val_prompts)


def held_out_reviews(n=2000, seed=12345):
    rng = random.Random(seed)
    return [task.random_review(rng) for _ in range(n)]


def test_reward_model_accuracy_including_negation(embedded_task):
    reviews = held_out_reviews()
    labels = torch.tensor([task.token_scores(words).sum() > 0 for words in reviews])
    negated = torch.tensor(["not" in words for words in reviews])
    scores = scoring.score(
        embedded_task.reward_model,
        embedded_task.reward_tokenizer,
        [""] * len(reviews),
        [" ".join(words) for words in reviews],
    )
    correct = ((scores > 0) == labels).float()
    assert correct.mean() >= 0.98
    assert negated.sum() > 300 and correct[negated].mean() >= 0.98


def test_sft_policy_writes_well_formed_reviews(embedded_task):
    tokenizer = embedded_task.policy_tokenizer
    enc = tokenizer(embedded_task.val_prompts[:128], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = embedded_task.policy.generate(
        **enc,
        do_sample=True,
        max_new_tokens=30,
        top_k=0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    well_formed = 0
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        if tokenizer.eos_token_id in row:
            end = row.index(tokenizer.eos_token_id)
            well_formed += end > 0 and row[end - 1] == tokenizer.convert_tokens_to_ids(".")
    assert well_formed / len(out) >= 0.9


def test_same_seed_same_weights_and_cache_reload(tmp_path, monkeypatch):
    first = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "a"), **SMALL))
    # The caller's thread count must not reach the training: float sums change with it.
    seen_threads, train_policy = [], task.train_policy
    monkeypatch.setattr(
        task,
        "train_policy",
        lambda *args: seen_threads.append(torch.get_num_threads()) or train_policy(*args),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        second = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "b"), **SMALL))
    finally:
        torch.set_num_threads(threads)
    assert seen_threads == [1]
    for a, b in [(first.policy, second.policy), (first.reward_model, second.reward_model)]:
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    assert first.val_prompts == second.val_prompts
    other_seed = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "a"), seed=1, **SMALL))
    assert not torch.equal(other_seed.policy.transformer.wte.weight, first.policy.transformer.wte.weight)
    assert len(os.listdir(tmp_path / "a")) == 2  # one folder per setting, nothing half-written


def test_save_pretrained_round_trip_through_the_real_loader(tmp_path, embedded_task):
    embedded_task.policy.save_pretrained(tmp_path / "policy")
    embedded_task.policy_tokenizer.save_pretrained(tmp_path / "policy")
    embedded_task.reward_model.save_pretrained(tmp_path / "rm")
    embedded_task.reward_tokenizer.save_pretrained(tmp_path / "rm")
    loaded = task.build_task(
        task.TaskConfig(
            policy=str(tmp_path / "policy"),
            reward_model=str(tmp_path / "rm"),
            cache_dir=str(tmp_path / "unused"),
            **SMALL,
        )
    )
    assert not loaded.embedded and loaded.policy_tokenizer.padding_side == "left"
    assert loaded.reward_model.config._attn_implementation == "eager"
    ids = torch.tensor([[2, 10, 20, 30]])
    assert torch.equal(loaded.policy(ids).logits, embedded_task.policy(ids).logits)
    text = ["the acting was not dull ."]
    assert torch.equal(
        scoring.score(loaded.reward_model, loaded.reward_tokenizer, text, [""]),
        scoring.score(embedded_task.reward_model, embedded_task.reward_tokenizer, text, [""]),
    )


def test_ends_reviews_is_p_eos_after_each_review_as_scored_alone():
    tokenizer = task.make_tokenizer("[BOS]", "left")
    size = dict(vocab_size=len(task.VOCABULARY), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    policy = transformers.GPT2LMHeadModel(transformers.GPT2Config(**size)).eval()
    eos = tokenizer.eos_token_id
    texts = ("a fine film .", "this film was not dull at all .")
    encoded = [tokenizer(text)["input_ids"] + [eos] for text in texts]  # two lengths: one row is padded
    by_hand = []
    for row in encoded:  # each review alone, no padding: p(EOS) after its last word, the `.`
        logits = policy(input_ids=torch.tensor([row])).logits[0]  # (L, V)
        by_hand.append(logits[len(row) - 2].softmax(-1)[eos].item())
    assert task.ends_reviews(policy, encoded, tokenizer) == pytest.approx(np.mean(by_hand), rel=1e-5)


@pytest.mark.parametrize("checks, runs, expected", [([0.1, 0.9], 3, 2), ([0.9], 3, 1), ([0.1, 0.1], 2, 2)])
def test_sft_runs_again_only_while_the_policy_does_not_end_reviews(monkeypatch, checks, runs, expected):
    rng = random.Random(0)
    reviews = [task.random_review(rng) for _ in range(80)]
    seen = []
    monkeypatch.setattr(task, "ends_reviews", lambda *_: seen.append(1) or checks[len(seen) - 1])
    config = task.TaskConfig(sft_steps=1, sft_runs=runs)
    task.train_policy(reviews, task.make_tokenizer("[BOS]", "left"), config, random.Random(0))
    assert len(seen) == expected  # one check after each run; it stops at the first that passes
