"""Where prompts, the SFT policy, the reward model and demonstrations come from.

The default is an *embedded* task that builds in about a minute on a CPU with no network:

    the plot was not great but the acting was superb .

A synthetic review language (~250 words) whose sentiment is known exactly: every sentiment
adjective has a polarity and a strength (1-3), `not` flips the next adjective of its sentence
(adverbs may stand between), and a review's value is the mean over its sentences of their summed
scores (`review_value`); one sentence by default, several sized to a response range with
`TaskConfig.response_tokens` (run.py --reviews sized). Attributions have two truths:
`true_shapley_credit` (exact Shapley values of the game the RM regresses, the truth for SHAP and
LIME) and `true_token_credit` (the lexicon's signed values).

    reward model  a 2-layer BERT classifier trained with ~15% random [UNK] masking (the masked
                  texts SHAP and LIME feed it stay in distribution); score = logit_pos - logit_neg
    SFT policy    a 2-layer GPT-2 trained on balanced reviews: every PPO run starts from it
    prompts       the first 2-4 words of held-out reviews, each with a positive demonstration

Built models are cached by settings and read back by `from_pretrained`, which also takes a hub
name or a local path: a real setup (a GPT-2 policy, a DistilBERT IMDb RM) is one option away.
"""

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from loading import load_policy, load_reward_model, quiet_transformers, read_prompts

CACHE_VERSION = 6  # bump when the generator or the training recipe changes


# ---- The review language --------------------------------------------------------------
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


# ---- Tokenizers: word level, whitespace split (so offsets exist), one shared vocabulary ----
def make_tokenizer(first_token: str, padding_side: str) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer that puts `first_token` ([BOS] policy, [CLS] RM) in front."""
    vocab = {word: i for i, word in enumerate(VOCABULARY)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{first_token} $A", special_tokens=[(first_token, vocab[first_token])]
    )
    names = {f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "bos", "eos", "cls")}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, padding_side=padding_side, **names)


# ---- Settings and the result ----------------------------------------------------------
@dataclass
class TaskConfig:
    seed: int = 0  # seed of the review generator and of both trainings
    cache_dir: str = ".cache/task"  # where built models are saved and read back (keyed by these settings)
    policy: str | None = None  # hub name or local path of a causal LM policy (None: the embedded GPT-2)
    reward_model: str | None = None  # hub name or path of a sequence classifier RM (None: embedded BERT)
    prompts: str | None = None  # file, one prompt per line, or `prompt<TAB>demonstration` (None: embedded)
    n_reviews: int = 20000  # synthetic reviews to train the RM and the SFT policy on
    n_train_prompts: int = 2048  # embedded training prompts
    n_val_prompts: int = 256  # embedded held-out prompts (evaluation)
    rm_steps: int = 1000  # RM optimiser steps (batch 128 reviews)
    sized_rm_steps: int = 3000  # the same on sized reviews (batches of as many words, and as many sentences)
    rm_mask_prob: float = 0.15  # probability that a word is replaced by [UNK] while training the RM
    sft_steps: int = 300  # SFT optimiser steps of one run (batch 64 reviews, or as many words)
    sft_runs: int = 3  # at most this many SFT runs, until the policy ends reviews where they end
    val_fraction: float = 0.1  # share of a prompts file held out for evaluation
    response_tokens: tuple[int, int] | None = None  # None: one-sentence reviews (the default task); (lo, hi):
    # reviews of several sentences whose responses to a 2-4 word prompt hold lo..hi tokens with EOS

    def review_words(self) -> tuple[int, int] | None:
        """Words (`.`s included) of a review whose response after any 2-4 word prompt, plus EOS, holds
        response_tokens[0] .. response_tokens[1] tokens: [lo + 3, hi + 1] (at least 5: one short sentence)."""
        if self.response_tokens is None:
            return None
        low, high = self.response_tokens
        return max(5, low + 3), max(5, low + 3, high + 1)

    def batch(self, reviews: int) -> int:
        """Reviews per training step: `reviews` on the default task; on sized reviews as many words per step
        (reviews x 16 / the longest review), so that a task builds in the same minutes at any length."""
        return reviews if self.response_tokens is None else max(4, reviews * 16 // self.review_words()[1])

    def positions(self) -> int:
        """Positions both embedded models hold: 64 (the default task), else the longest review + 8."""
        return 64 if self.response_tokens is None else max(64, self.review_words()[1] + 8)


@dataclass
class Task:
    policy: torch.nn.Module
    policy_tokenizer: transformers.PreTrainedTokenizerFast
    reward_model: torch.nn.Module
    reward_tokenizer: transformers.PreTrainedTokenizerFast
    train_prompts: list[str]
    val_prompts: list[str]
    demonstrations: dict[str, str]  # prompt -> demonstration response (with leading space)
    embedded: bool  # True: the synthetic task, where the truth of the credit is known


# ---- Training the two embedded models -------------------------------------------------
def train_reward_model(reviews: list[list[str]], tokenizer, config: TaskConfig, rng) -> torch.nn.Module:
    """A tiny BERT classifier whose margin `logit_pos - logit_neg` is regressed (MSE) onto the sentiment
    of what stays visible of randomly [UNK]-masked reviews (`review_value`): a graded reward whose sign
    is the label (cross-entropy learns the sign far slower at this size)."""
    size = dict(vocab_size=len(VOCABULARY), max_position_embeddings=config.positions(), pad_token_id=0,
                num_labels=2)  # fmt: skip
    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    labels = dict(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    plain = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    bert = transformers.BertConfig(**size, **layers, **labels, **plain)
    model = transformers.BertForSequenceClassification(bert)
    sized = config.response_tokens is not None
    steps, lr = (config.sized_rm_steps, 3e-3) if sized else (config.rm_steps, 5e-3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    model.train()
    for _ in range(steps):
        batch = rng.sample(reviews, config.batch(128))
        if sized:  # as many one-sentence reviews: where each word's and each `not`'s signal is strong
            batch += [random_review(rng) for _ in batch]
        visible = [[rng.random() >= config.rm_mask_prob for _ in words] for words in batch]
        texts = [" ".join(w if v else "[UNK]" for w, v in zip(*pair)) for pair in zip(batch, visible)]
        target = torch.tensor([review_value(w, v) for w, v in zip(batch, visible)]).float()
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits  # (B, 2)
        loss = F.mse_loss(logits[:, 1] - logits[:, 0], target)
        optimizer.zero_grad()
        loss.backward()
        if sized:  # long sequences: without the clip the updates diverge
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model.eval()


def train_policy(reviews: list[list[str]], tokenizer, config: TaskConfig, rng) -> torch.nn.Module:
    """A tiny GPT-2 trained by next-token prediction on `[BOS] review . [EOS]`: one-cycle runs of
    `sft_steps` each, until it puts EOS where reviews end (`ends_reviews` >= 0.5 on the first 64), at most
    `sft_runs`. One run is enough on the default task and at 90-110 tokens; at 140-160 the first run
    stalled with EOS unlearned (seed 0), and a second run from where it stopped learned it."""
    size = dict(vocab_size=len(VOCABULARY), n_positions=config.positions(), n_embd=128, n_layer=2, n_head=4)
    ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")}
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**size, **ids))
    model.loss_type = "ForCausalLM"  # the loss labels= asks for: transformers finds none in this class's name
    encoded = [tokenizer(" ".join(words))["input_ids"] + [tokenizer.eos_token_id] for words in reviews]
    for _ in range(config.sft_runs):
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=config.sft_steps)
        model.train()
        for _ in range(config.sft_steps):
            ids, mask = padded(rng.sample(encoded, config.batch(64)), tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if ends_reviews(model.eval(), encoded[:64], tokenizer) >= 0.5:
            break
    return model.eval()


def padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, L) and their attention mask (B, L)."""
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(row) for row in rows], True, pad_id)  # (B, L)
    return ids, (ids != pad_id).long()


@torch.no_grad()
def ends_reviews(policy, encoded: list[list[int]], tokenizer) -> float:
    """Mean p(EOS | the review before it) over `encoded` reviews, each `[BOS] review . [EOS]`, teacher-forced:
    whether the policy ends a review where reviews end (no sampling, no random state used)."""
    ids, mask = padded(encoded, tokenizer.pad_token_id)  # (B, L) each
    logprobs = policy(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)  # (B, L, V)
    before_eos = mask.sum(1) - 2  # (B,) the position whose next token is EOS
    return logprobs[torch.arange(len(encoded)), before_eos, tokenizer.eos_token_id].exp().mean().item()


def make_prompts(n: int, rng: random.Random, length=None) -> tuple[list[str], dict[str, str]]:
    """Prompts = the first 2-4 words of fresh reviews, each with a positive demonstration (`length`: its
    words, as random_review): the prompt's slots of the first clause kept, the rest redrawn until the
    review is positive."""
    prompts, demonstrations = [], {}
    while len(prompts) < n:
        first = random_clause(rng)
        present = [slot for slot in CLAUSE_SLOTS if first[slot] is not None][: rng.choice((2, 3, 4))]
        fixed = {slot: first[slot] for slot in CLAUSE_SLOTS[: CLAUSE_SLOTS.index(present[-1]) + 1]}
        prompt = " ".join(first[slot] for slot in present)
        if prompt in demonstrations:
            continue
        words = random_review(rng, length, fixed)
        while review_value(words) <= 0:
            words = random_review(rng, length, fixed)
        prompts.append(prompt)
        demonstrations[prompt] = " " + " ".join(words[len(present) :])
    return prompts, demonstrations


def cache_folder(config: TaskConfig) -> str:
    """The folder of the task these settings build, with these CPU kernels: torch's capability, MKL's and
    oneDNN's code paths (training on other kernels builds other last bits, so another task)."""
    ignored = ("cache_dir", "policy", "reward_model", "prompts")  # not part of what is built
    settings = {k: v for k, v in asdict(config).items() if k not in ignored}
    paths = [os.environ.get(name) for name in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")]
    kernels = [torch.backends.cpu.get_cpu_capability(), *paths]
    key = json.dumps({**settings, "version": CACHE_VERSION, "kernels": kernels}, sort_keys=True).encode()
    return os.path.join(config.cache_dir, f"embedded-{hashlib.sha1(key).hexdigest()[:12]}")


def build_embedded(folder: str, config: TaskConfig) -> None:
    """Generate the language, train both models, and write everything to `folder` atomically."""
    start, rng = time.time(), random.Random(config.seed)
    torch.manual_seed(config.seed)
    reviews = [random_review(rng, config.review_words()) for _ in range(config.n_reviews)]
    policy_tokenizer, reward_tokenizer = make_tokenizer("[BOS]", "left"), make_tokenizer("[CLS]", "right")
    # Float sums depend on how many threads share them: training on one thread, whatever the
    # caller's setting, builds the same models on every machine and for every --threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reward_model = train_reward_model(reviews, reward_tokenizer, config, rng)
        policy = train_policy(reviews, policy_tokenizer, config, rng)
    finally:
        torch.set_num_threads(threads)
    n_prompts = config.n_train_prompts + config.n_val_prompts
    prompts, demonstrations = make_prompts(n_prompts, rng, config.review_words())
    os.makedirs(config.cache_dir, exist_ok=True)
    partial = tempfile.mkdtemp(dir=config.cache_dir, prefix=".partial-")
    with quiet_transformers():
        for name, model, tokenizer in [
            ("policy", policy, policy_tokenizer),
            ("reward_model", reward_model, reward_tokenizer),
        ]:
            model.save_pretrained(os.path.join(partial, name))
            tokenizer.save_pretrained(os.path.join(partial, name))
    train, val = prompts[: config.n_train_prompts], prompts[config.n_train_prompts :]
    stored = dict(train=train, val=val, demonstrations=demonstrations, build_seconds=time.time() - start)
    with open(os.path.join(partial, "prompts.json"), "w") as file:
        json.dump(stored, file)
    try:
        os.rename(partial, folder)  # atomic: a crash never leaves a half-written cache behind
    except OSError:  # another process finished first; its result is identical
        shutil.rmtree(partial)


def true_credit(the_task: Task, truth: str, prompts: list[str], response_ids, response_mask) -> torch.Tensor:
    """The truth `truth` ('true_shapley' or 'lexicon') of every response token (B, T), 0 outside the mask."""
    credit_of = {"true_shapley": true_shapley_credit, "lexicon": true_token_credit}[truth]
    tokens_of = the_task.policy_tokenizer.convert_ids_to_tokens
    values = torch.zeros(response_mask.shape)  # (B, T)
    for i, (prompt, row, n) in enumerate(zip(prompts, response_ids.tolist(), response_mask.sum(1).tolist())):
        values[i, :n] = torch.tensor(credit_of(prompt, tokens_of(row[:n])))
    return values


def position_error(the_task: Task, max_new_tokens: int) -> str | None:
    """The policy's or the embedded RM's position limit that the longest prompt plus max_new_tokens
    overruns, in one line, or None (an RM with a tokenizer of its own checks each text it scores)."""
    prompts = the_task.train_prompts + the_task.val_prompts
    needed = max(len(ids) for ids in the_task.policy_tokenizer(prompts)["input_ids"]) + max_new_tokens
    policy, rm = the_task.policy.config, the_task.reward_model.config
    policy_holds = getattr(policy, "n_positions", None) or getattr(policy, "max_position_embeddings", None)
    limits = [("policy", policy_holds)]
    limits += [("reward model", rm.max_position_embeddings)] * the_task.embedded
    for what, holds in limits:
        if holds and needed > holds:
            hint = " (the embedded task's --reviews sized builds models as long as asked)" * the_task.embedded
            return (f"--max-new-tokens {max_new_tokens}: the longest prompt and its response need {needed} "
                    f"positions; the {what} holds {holds}{hint}")  # fmt: skip
    return None


def build_task(config: TaskConfig) -> Task:
    """The embedded task (built once, then read from the cache), or a real model pair: each of
    `policy`, `reward_model`, `prompts` given replaces its embedded counterpart (and the true credit)."""
    embedded = (config.policy, config.reward_model, config.prompts) == (None, None, None)
    policy_path = reward_path = None
    if None in (config.policy, config.reward_model, config.prompts):
        folder = cache_folder(config)
        if not os.path.isdir(folder):
            build_embedded(folder, config)
        policy_path, reward_path = os.path.join(folder, "policy"), os.path.join(folder, "reward_model")
        with open(os.path.join(folder, "prompts.json")) as file:
            stored = json.load(file)
        train_prompts, val_prompts, demonstrations = stored["train"], stored["val"], stored["demonstrations"]
    if config.prompts is not None:
        train_prompts, val_prompts, demonstrations = read_prompts(config.prompts, config.val_fraction)
    policy = load_policy(config.policy or policy_path)
    reward_model = load_reward_model(config.reward_model or reward_path)
    return Task(*policy, *reward_model, train_prompts, val_prompts, demonstrations, embedded)
