"""The review language: its generator, the value of a review, and the two truths of token credit."""

import itertools
import math
import random

import numpy as np

import language


def test_true_token_credit_by_hand():
    credit = language.true_token_credit("the plot", "was not great but the acting was superb .".split())
    assert credit.tolist() == [0, 0, -2, 0, 0, 0, 0, 3, 0]
    # a negation in the prompt reaches the response; an adverb lets it pass
    assert language.true_token_credit("the plot was not", ["very", "dull", "."]).tolist() == [0, 1, 0]
    # any other word cancels a pending negation
    assert language.true_token_credit("the film", ["was", "not", "the", "good", "[EOS]"]).tolist() == [
        0,
        0,
        0,
        1,
        0,
    ]


def test_masked_words_carry_no_sentiment():
    words = "the plot was not great .".split()
    assert language.token_scores(words).sum() == -2
    assert language.token_scores(words, [True, True, True, False, True, True]).sum() == 2  # hidden `not`
    assert language.token_scores(words, [True, True, True, True, False, True]).sum() == 0  # hidden adjective


def test_true_shapley_credit_by_hand():
    # `not great`, prompt always shown: v({}) = 0, v({great}) = 2, v({not}) = 0, v({not, great}) = -2
    # phi_not   = 1/2 [(v({not}) - v({})) + (v({not, great}) - v({great}))] = 1/2 [0 - 4] = -2
    # phi_great = 1/2 [(v({great}) - v({})) + (v({not, great}) - v({not}))] = 1/2 [2 - 2] = 0
    assert np.allclose(language.true_shapley_credit("the plot was", ["not", "great", "."]), [-2, 0, 0])
    # a `not` in the prompt is always shown: v({}) = 0, v({great}) = -2, so `great` takes all of it
    # (the adverb between passes the negation whether shown or hidden: a null player)
    assert np.allclose(language.true_shapley_credit("the plot was not", ["very", "great", "."]), [0, -2, 0])
    # no `not`: the game is additive, so the Shapley values are the lexicon values
    response = "was good and the acting was superb .".split()
    assert np.allclose(
        language.true_shapley_credit("the plot", response), language.true_token_credit("the plot", response)
    )
    # v is the mean over sentences: two sentences, no `not`, so each adjective's value over m = 2
    response = "great . the cast was dull .".split()
    assert np.allclose(language.true_shapley_credit("the plot was", response), [1, 0, 0, 0, 0, -0.5, 0])
    # not clipped: three strength-3 adjectives of one sentence give 9, each its own 3
    response = "superb and the acting was stunning and the score was brilliant .".split()
    credit = language.true_shapley_credit("the plot was", response)
    assert np.allclose(credit[[0, 5, 10]], 3) and np.allclose(np.delete(credit, [0, 5, 10]), 0)


def reference_shapley(prompt: str, response: list[str]) -> np.ndarray:
    """Every response token a player (null ones too), the Shapley sum over all subsets of review_value."""
    n, words = len(response), prompt.split() + response
    shown = [word not in language.SPECIAL_TOKENS for word in response]

    def value(subset):
        visible = [True] * (len(words) - n) + [shown[i] and i in subset for i in range(n)]
        return language.review_value(words, visible)

    phi = np.zeros(n)
    for t, k in itertools.product(range(n), range(n)):
        for subset in itertools.combinations([i for i in range(n) if i != t], k):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            phi[t] += weight * (value({*subset, t}) - value(set(subset)))
    return phi, value(set(range(n))) - value(set())


def test_true_shapley_credit_matches_full_enumeration_and_is_efficient():
    rng = random.Random(7)
    words_of = [
        lambda: language.random_review(rng),  # one sentence
        lambda: language.random_review(rng, (12, 30)),  # several: the response crosses sentences
        lambda: language.random_review(rng, (150, 165)),  # a long review, its last 9 tokens the response
        lambda: [rng.choice(["not", "not", "great", "dull", ".", "very", "the", "[UNK]"]) for _ in range(12)],
    ]
    for case in range(48):
        words = words_of[case % 4]()
        cut = rng.randint(0, 4) if case % 4 != 2 else len(words) - 9
        prompt, response = " ".join(words[:cut]), words[cut:][:9] + ["[EOS]"] * rng.randint(0, 1)
        credit = language.true_shapley_credit(prompt, response)
        reference, gain = reference_shapley(prompt, response)
        assert np.allclose(credit, reference, atol=1e-9)
        assert np.isclose(credit.sum(), gain)  # efficiency: sum_t phi_t = v(all) - v(prompt alone)


def test_true_shapley_credit_is_fast_and_efficient_at_any_length():
    rng = random.Random(3)
    for _ in range(20):
        words = language.random_review(rng, (150, 165))
        credit = language.true_shapley_credit("", words)
        assert np.isclose(credit.sum(), language.review_value(words))  # v(nothing shown) = 0
        # each sentence's credit is its own sentence's Shapley values over m
        m, start = language.n_sentences(words), 0
        for end in [i + 1 for i, word in enumerate(words) if word == language.END]:
            assert np.allclose(credit[start:end], language.true_shapley_credit("", words[start:end]) / m)
            start = end


def test_generator_is_seeded_and_never_ties():
    first = [language.random_review(random.Random(3)) for _ in range(3)]
    assert first == [language.random_review(random.Random(3)) for _ in range(3)]
    rng = random.Random(0)
    assert all(language.token_scores(language.random_review(rng)).sum() != 0 for _ in range(500))
    for low, high in [(11, 17), (93, 111), (143, 161)]:  # sized reviews: whole sentences, in the range
        for words in [language.random_review(rng, (low, high)) for _ in range(50)]:
            assert low <= len(words) <= high and words[-1] == language.END
            assert language.n_sentences(words) == words.count(language.END) >= 1


def test_a_sentence_ends_a_negation_and_the_value_is_a_mean_over_sentences():
    words = "the plot was not . great .".split()  # not a generated review, but a `.` ends the `not`
    assert language.token_scores(words).tolist() == [0, 0, 0, 0, 0, 2, 0]
    assert language.token_scores(words, [True] * 4 + [False, True, True]).tolist() == [0, 0, 0, 0, 0, 2, 0]
    sentence = "the plot was great .".split()
    assert language.review_value(sentence * 7) == language.review_value(sentence) == 2  # not 7 x 2
    assert language.n_sentences("the plot was great . the cast".split()) == 2  # a response cut short
