"""The embedded task's review language, and the two truths of its token credit.

    the plot was not great but the acting was superb .

A synthetic review language (~250 words) whose sentiment is known exactly: every sentiment
adjective has a polarity and a strength (1-3), `not` flips the next adjective of its sentence
(adverbs may stand between), and a review's value is the mean over its sentences of their summed
scores (`review_value`). Attributions have two truths: `true_shapley_credit` (exact Shapley values
of that game, the truth for SHAP and LIME) and `true_token_credit` (the lexicon's signed values).
`task.py` trains the reward model and the SFT policy on reviews drawn from it.
"""

import random

import numpy as np


def strengths(text: str) -> dict[str, int]:
    """`"w1 w2 | w3"` -> {word: strength}: words before the first `|` have strength 1, and so on."""
    return {word: strength for strength, group in enumerate(text.split("|"), 1) for word in group.split()}


POSITIVE = strengths(
    "good nice fine decent pleasant solid charming sweet neat fun likable enjoyable warm clever lively fresh "
    "honest tidy cute smart | great lovely delightful gripping moving beautiful impressive stylish touching "
    "wonderful powerful elegant funny vivid rich inspired | superb brilliant stunning excellent outstanding "
    "masterful perfect magnificent flawless sublime"
)
NEGATIVE = strengths(
    "bad dull weak flat plain bland stale slow clumsy messy thin silly cheap tired forced odd shallow sloppy "
    "loud | boring poor awful ugly annoying tedious lifeless painful clunky hollow lazy muddled pointless "
    "dreary wooden | terrible horrible dreadful atrocious abysmal unwatchable disastrous dire wretched "
    "insufferable"
)
POLARITY = {**POSITIVE, **{word: -strength for word, strength in NEGATIVE.items()}}
NOUNS = (
    "plot acting story music ending cast film movie script direction dialogue pacing score soundtrack camera "
    "lighting editing villain hero heroine twist sequel premise humor tone mood setting scenery costumes "
    "effects action romance finale opening character lead performance voice writing budget runtime trailer "
    "cinematography chemistry choreography atmosphere narration animation design makeup climax theme message "
    "ensemble director producer casting remake adaptation documentary comedy drama thriller western musical "
    "horror fantasy mystery episode season series show scene sequence montage cameo middle plotline "
    "storyline visuals camerawork dubbing subtitles credits poster stunts sets dance songs lyrics"
).split()
MODIFIERS = (
    "new old long short recent french early late final second whole entire main central original animated "
    "silent modern classic familiar british italian young big small first third latest restored extended"
).split()
VERBS = "was is felt seemed looked sounded remained became proved stayed".split()
ADVERBS = (
    "very really quite truly rather fairly so simply mostly utterly pretty largely mainly somewhat".split()
)
DETERMINERS = "the this that its".split()
CONNECTIVES = ("but", "and")
NEGATION = "not"
END = "."
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]"]
TRANSPARENT = {*ADVERBS, *SPECIAL_TOKENS}  # words a pending `not` passes over
VOCABULARY = SPECIAL_TOKENS + sorted(
    {*POLARITY, *NOUNS, *MODIFIERS, *VERBS, *ADVERBS, *DETERMINERS, *CONNECTIVES, NEGATION, END}
)
CLAUSE_SLOTS = ("det", "mod", "noun", "verb", "neg", "adv", "adj")  # rendering order


def random_clause(rng: random.Random) -> dict:
    """One clause `DET [MOD] NOUN VERB [not] [ADV] ADJ`; absent optional slots are None."""
    return {
        "det": rng.choice(DETERMINERS),
        "mod": rng.choice(MODIFIERS) if rng.random() < 0.3 else None,
        "noun": rng.choice(NOUNS),
        "verb": rng.choice(VERBS),
        "neg": NEGATION if rng.random() < 0.25 else None,
        "adv": rng.choice(ADVERBS) if rng.random() < 0.3 else None,
        "adj": rng.choice(list(POLARITY)),
    }


def random_sentence(rng: random.Random, first_clause: dict | None = None) -> list[str]:
    """1-3 clauses joined by `but`/`and`, closed by `.`, drawn again while the sentiment sums to 0
    (no label); `first_clause` fixes slots of the first clause."""
    while True:
        clauses = [{**random_clause(rng), **(first_clause or {})}]
        clauses += [random_clause(rng) for _ in range(rng.choice((0, 1, 1, 2)))]
        words = []
        for i, clause in enumerate(clauses):
            if i > 0:
                words.append(rng.choice(CONNECTIVES))
            words += [clause[slot] for slot in CLAUSE_SLOTS if clause[slot] is not None]
        if token_scores(words).sum() != 0:
            return words + [END]


def random_review(rng: random.Random, words: tuple[int, int] | None = None, first_clause=None) -> list[str]:
    """One sentence (`words` None: the default task), or sentences until the review holds between
    words[0] and words[1] words (a last sentence that overshoots is drawn again)."""
    review = random_sentence(rng, first_clause)
    if words is None:
        return review
    while True:
        while len(review) < words[0]:
            review += random_sentence(rng)
        if len(review) <= words[1]:
            return review
        review = review[: len(review) - review[::-1].index(END, 1)] if END in review[:-1] else []
        review = review or random_sentence(rng, first_clause)  # the first sentence alone overshot


def token_scores(words: list[str], visible: list[bool] | None = None) -> np.ndarray:
    """Each word's polarity x strength, flipped by a pending `not`.

    `not` negates the next sentiment adjective of its sentence; adverbs, special tokens and hidden
    words (`visible[i]` False: masked by [UNK], which in the generated language can only stand where
    an adverb does) let it pass; any other word cancels it, and so does a sentence's `.`, shown or
    hidden. Hidden words contribute 0, and a hidden `not` negates nothing.
    """
    visible = visible or [True] * len(words)
    scores, negated = np.zeros(len(words)), False
    for i, (word, seen) in enumerate(zip(words, visible)):
        if not seen or word in TRANSPARENT:
            negated = negated and word != END
            continue
        if word in POLARITY:
            scores[i] = -POLARITY[word] if negated else POLARITY[word]
        negated = word == NEGATION
    return scores


def n_sentences(words: list[str]) -> int:
    """Sentences of a review: its `.`s, plus an unfinished last one (a response cut at max_new_tokens)."""
    tail = words[len(words) - words[::-1].index(END) :] if END in words else words
    return words.count(END) + any(word not in SPECIAL_TOKENS for word in tail) or 1


def review_value(words: list[str], visible: list[bool] | None = None) -> float:
    """The sentiment the RM regresses: the mean over sentences of each sentence's summed score,

        v = (1 / m) sum_s sum_{t in s} token_scores_t,     m = n_sentences(words),

    the same scale at every length (a long review is not more positive for being long) and with no
    clip to saturate (a sentence of well-formed clauses sums to at most 9)."""
    return token_scores(words, visible).sum() / n_sentences(words)


def true_token_credit(prompt: str, response_tokens: list[str]) -> np.ndarray:
    """Lexicon credit of each response token (a word string): its signed score over m, 0 for neutral
    words and special tokens. The prompt is read first: a trailing `not` negates the first adjective."""
    prompt_words = [w for w in prompt.split() if w not in SPECIAL_TOKENS]
    words = prompt_words + list(response_tokens)
    return token_scores(words)[len(prompt_words) :] / n_sentences(words)


def true_shapley_credit(prompt: str, response_tokens: list[str]) -> np.ndarray:
    """Exact Shapley values of the sentiment game v(S) = review_value(x + y, visible = x and S) over the
    response tokens (the prompt x always visible), in closed form at any length.

        phi_t = sum_{S not containing t} |S|! (n - |S| - 1)! / n! [v(S + t) - v(S)]   (Shapley 1953)

    v is a sum of one small game per response adjective a: g_a(S) = [a in S] pol_a sigma_a(S), where
    sigma_a = -1 if the nearest shown word before a in its sentence (adverbs and special tokens are
    skipped) is `not`, else +1. Shapley values add over games, and g_a involves only a and the chain
    c_1, c_2, ..., c_k of words before it (nearest first) up to its sentence's start or the first prompt
    word, whose sign tau (-1 for a `not`) ends the chain. In a random order of these k + 1 players:

        phi_a   = pol_a [ sum_l s_l / (l (l + 1)) + tau / (k + 1) ]
        phi_c_j = pol_a [ sum_{l > j} w_l (s_j - s_l) + (s_j - tau) / (k (k + 1)) ]
        w_l     = 2 / ((l + 1) l (l - 1))

    with s_l = -1 for a `not` and +1 otherwise (w_l: a and c_l come before c_j, the l - 2 others after).
    `not great`: phi = (-2, 0). Every other response token is a null player, phi = 0; all over m.
    """
    prompt_words = [w for w in prompt.split() if w not in SPECIAL_TOKENS]
    words, start = prompt_words + list(response_tokens), len(prompt_words)
    phi = np.zeros(len(words))
    for a in (i for i in range(start, len(words)) if words[i] in POLARITY):
        chain, tau = [], 1
        for j in range(a - 1, -1, -1):
            if words[j] == END or j < start and words[j] not in TRANSPARENT:
                tau = -1 if j < start and words[j] == NEGATION else 1
                break
            if words[j] not in TRANSPARENT:
                chain.append(j)
        k, pol = len(chain), POLARITY[words[a]]
        s = np.array([-1.0 if words[j] == NEGATION else 1.0 for j in chain])  # (k,) nearest first
        rank = np.arange(1, k + 1)  # (k,) l
        phi[a] += pol * ((s / (rank * (rank + 1))).sum() + tau / (k + 1))
        w = np.where(rank > 1, 2 / ((rank + 1) * rank * np.maximum(rank - 1, 1)), 0.0)  # (k,) w_l
        after = np.cumsum((w * s)[::-1])[::-1] - w * s  # (k,) sum_{l > j} w_l s_l
        weight_after = np.cumsum(w[::-1])[::-1] - w  # (k,) sum_{l > j} w_l
        phi[chain] += pol * (s * weight_after - after + (s - tau) / (k * (k + 1)) if k else 0)
    return phi[start:] / n_sentences(words)
