"""Where prompts, the SFT policy, the reward model and demonstrations come from.

The default is an *embedded* task that builds in about a minute on a CPU with no network:

    the plot was not great but the acting was superb .

A synthetic review language (~250 words) whose sentiment is known exactly: every sentiment
adjective has a polarity and a strength (1-3), `not` flips the next adjective (adverbs may
stand between), and a review is positive when its summed score is > 0. So attributions can be
scored against a truth: `true_shapley_credit` (exact Shapley values of the game the RM
regresses, the truth for SHAP and LIME) and `true_token_credit` (the lexicon's signed values).

    reward model  a 2-layer BERT classifier trained with ~15% random [UNK] masking (the masked
                  texts SHAP and LIME feed it stay in distribution); score = logit_pos - logit_neg
    SFT policy    a 2-layer GPT-2 trained on balanced reviews: every PPO run starts from it
    prompts       the first 2-4 words of held-out reviews, each with a positive demonstration

Built models are cached by settings and read back by `from_pretrained`, which also takes a hub
name or a local path: a real setup (a GPT-2 policy, a DistilBERT IMDb RM) is one option away.
"""

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import huggingface_hub
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

CACHE_VERSION = 3  # bump when the generator or the training recipe changes
REWARD_CLIP = 8  # the RM regresses the visible sentiment clipped to +-8
HUB_HOST = urlparse(huggingface_hub.constants.ENDPOINT).hostname  # answers on 443 when online
MAX_SHAPLEY_PLAYERS = 16  # true_shapley_credit enumerates 2^n coalitions of the words that matter


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


def random_review(rng: random.Random, first_clause: dict | None = None) -> list[str]:
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


def token_scores(words: list[str], visible: list[bool] | None = None) -> np.ndarray:
    """The embedded task's sentiment function: each word's polarity x strength, flipped by a pending `not`.

    `not` negates the next sentiment adjective; adverbs (and hidden words, which in the generated
    language can only stand where an adverb does) let it pass; any other word cancels it. Hidden
    words (`visible[i]` False: masked by [UNK]) contribute 0, and a hidden `not` negates nothing.
    """
    visible = visible or [True] * len(words)
    scores, negated = np.zeros(len(words)), False
    for i, (word, seen) in enumerate(zip(words, visible)):
        if not seen or word in ADVERBS:
            continue
        if word in POLARITY:
            scores[i] = -POLARITY[word] if negated else POLARITY[word]
        negated = word == NEGATION
    return scores


def true_token_credit(prompt: str, response_tokens: list[str]) -> np.ndarray:
    """Lexicon credit of each response token (a word string): its signed score, 0 for neutral words
    and special tokens. The prompt is read first: a trailing `not` negates the first adjective."""
    prompt_words = [w for w in prompt.split() if w not in SPECIAL_TOKENS]
    return token_scores(prompt_words + list(response_tokens))[len(prompt_words) :]


def true_shapley_credit(prompt: str, response_tokens: list[str]) -> np.ndarray:
    """Exact Shapley values of the embedded task's sentiment game over the response tokens.

        v(S) = clip(sum token_scores(x + y, visible = x and S), -REWARD_CLIP, REWARD_CLIP)
        phi_t = sum_{S not containing t} |S|! (n - |S| - 1)! / n! [v(S + t) - v(S)]   (Shapley 1953)

    v is the target `train_reward_model` regresses the RM onto, clip included; the prompt x is
    always visible. `not great`: v({great}) = 2, v({not}) = v({}) = 0, v(both) = -2, so phi =
    (-2, 0). sum_t phi_t = v(all) - v(x alone). No closed form (a `not` reaches a later clause's
    adjective once the words between are hidden; the clip couples all adjectives): exact
    enumeration over the words that can change v, adjectives and non-adverbs from the first
    `not` to the last adjective; the rest (adverbs, special tokens) are null players, phi = 0.
    """
    prompt_words = [w for w in prompt.split() if w not in SPECIAL_TOKENS]
    words, start = prompt_words + list(response_tokens), len(prompt_words)
    last_adj = max((i for i, w in enumerate(words) if w in POLARITY), default=-1)
    first_not = words.index(NEGATION) if NEGATION in words else len(words)
    between = [first_not <= i < last_adj and w not in ADVERBS + SPECIAL_TOKENS for i, w in enumerate(words)]
    players = [i for i in range(start, len(words)) if words[i] in POLARITY or between[i]]
    if len(players) > MAX_SHAPLEY_PLAYERS:
        raise ValueError(f"{len(players)} players in {words}; at most {MAX_SHAPLEY_PLAYERS} are enumerated")
    n, coalitions = len(players), np.arange(2 ** len(players))  # bit j: players[j] is visible
    members = (coalitions[:, None] >> np.arange(n)) & 1 == 1  # (2^n, n)
    visible = np.tile(np.arange(len(words)) < start, (2**n, 1))  # (2^n, L) the prompt always shown
    visible[:, players] = members  # special tokens, never players, stay hidden (the RM never reads them)
    values = np.clip([token_scores(words, row.tolist()).sum() for row in visible], -REWARD_CLIP, REWARD_CLIP)
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) for k in range(n)]) / math.factorial(n)
    phi = np.zeros(len(response_tokens))
    for j, i in enumerate(players):
        without = coalitions[~members[:, j]]  # coalitions S not containing player j
        gain = values[without | 1 << j] - values[without]  # v(S + t) - v(S)
        phi[i - start] = (weight[members[without].sum(1)] * gain).sum()
    return phi


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
    rm_steps: int = 1000  # RM optimiser steps (batch 128)
    rm_mask_prob: float = 0.15  # probability that a word is replaced by [UNK] while training the RM
    sft_steps: int = 300  # SFT optimiser steps (batch 64)
    val_fraction: float = 0.1  # share of a prompts file held out for evaluation


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
    of what stays visible of randomly [UNK]-masked reviews (`token_scores`, clipped to +-REWARD_CLIP):
    a graded reward whose sign is the label (cross-entropy learns the sign far slower at this size)."""
    size = dict(vocab_size=len(VOCABULARY), max_position_embeddings=64, pad_token_id=0, num_labels=2)
    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    labels = dict(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    plain = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    bert = transformers.BertConfig(**size, **layers, **labels, **plain)
    model = transformers.BertForSequenceClassification(bert)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 5e-3, total_steps=config.rm_steps)
    model.train()
    for _ in range(config.rm_steps):
        batch = rng.sample(reviews, 128)
        visible = [[rng.random() >= config.rm_mask_prob for _ in words] for words in batch]
        texts = [" ".join(w if v else "[UNK]" for w, v in zip(*pair)) for pair in zip(batch, visible)]
        target = torch.tensor([token_scores(w, v).sum() for w, v in zip(batch, visible)]).float()
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits  # (B, 2)
        loss = F.mse_loss(logits[:, 1] - logits[:, 0], target.clamp(-REWARD_CLIP, REWARD_CLIP))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def train_policy(reviews: list[list[str]], tokenizer, config: TaskConfig, rng) -> torch.nn.Module:
    """A tiny GPT-2 trained by next-token prediction on `[BOS] review . [EOS]`."""
    size = dict(vocab_size=len(VOCABULARY), n_positions=64, n_embd=128, n_layer=2, n_head=4)
    ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")}
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**size, **ids))
    model.loss_type = "ForCausalLM"  # the loss labels= asks for: transformers finds none in this class's name
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=config.sft_steps)
    encoded = [tokenizer(" ".join(words))["input_ids"] + [tokenizer.eos_token_id] for words in reviews]
    model.train()
    for _ in range(config.sft_steps):
        rows = [torch.tensor(row) for row in rng.sample(encoded, 64)]
        ids = torch.nn.utils.rnn.pad_sequence(rows, True, tokenizer.pad_token_id)  # (B, L) right-padded
        mask = (ids != tokenizer.pad_token_id).long()  # (B, L)
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def make_prompts(n: int, rng: random.Random) -> tuple[list[str], dict[str, str]]:
    """Prompts = the first 2-4 words of fresh reviews, each with a positive demonstration: the
    prompt's slots of the first clause kept, the rest redrawn until the whole review is positive."""
    prompts, demonstrations = [], {}
    while len(prompts) < n:
        first = random_clause(rng)
        present = [slot for slot in CLAUSE_SLOTS if first[slot] is not None][: rng.choice((2, 3, 4))]
        fixed = {slot: first[slot] for slot in CLAUSE_SLOTS[: CLAUSE_SLOTS.index(present[-1]) + 1]}
        prompt = " ".join(first[slot] for slot in present)
        if prompt in demonstrations:
            continue
        words = random_review(rng, fixed)
        while token_scores(words).sum() <= 0:
            words = random_review(rng, fixed)
        prompts.append(prompt)
        demonstrations[prompt] = " " + " ".join(words[len(present) :])
    return prompts, demonstrations


# ---- Loading: one path for the embedded cache, hub names and local folders ------------
def hub_answers(timeout: float = 3.0) -> bool:
    """Whether the model hub may be asked: not switched off (HF_HUB_OFFLINE), and answering in time."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:  # read from the environment when imported
        return False
    with contextlib.suppress(OSError), socket.create_connection((HUB_HOST, 443), timeout):
        return True
    return False  # no connection within `timeout`


def load_pretrained(loader, name_or_path: str, what: str, **kwargs):
    """`loader.from_pretrained`, quiet, with one line that says what went wrong. A name that is not a
    local folder is read from the local hub cache unless the hub answers in seconds (no minute of retries)."""
    local_only = os.path.isdir(name_or_path) or not hub_answers()
    try:
        with quiet_transformers():
            return loader.from_pretrained(name_or_path, local_files_only=local_only, **kwargs)
    except (OSError, ValueError) as error:
        where = "it is not a local folder, and not in the local hub cache (is the network off?): no"
        where = "the local folder exists but holds no loadable" if os.path.isdir(name_or_path) else where
        raise ValueError(
            f"cannot load the {what} {name_or_path!r}: {where} {what} "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None


@contextlib.contextmanager
def quiet_transformers():
    """transformers without its known-harmless warnings (e.g. unused keys) and its loading and saving bars."""
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def load_policy(name_or_path: str):
    tokenizer = load_pretrained(
        transformers.AutoTokenizer, name_or_path, "policy tokenizer", padding_side="left"
    )
    if tokenizer.pad_token is None:  # GPT-2 has none: pad with EOS, masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return load_pretrained(transformers.AutoModelForCausalLM, name_or_path, "policy").eval(), tokenizer


def load_reward_model(name_or_path: str):
    """Eager attention: the default SDPA kernel returns no attention maps (scoring.sdpa_view scores fast)."""
    loader = transformers.AutoModelForSequenceClassification
    model = load_pretrained(loader, name_or_path, "reward model", attn_implementation="eager")
    tokenizer = load_pretrained(transformers.AutoTokenizer, name_or_path, "reward tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def read_prompts(path: str, val_fraction: float) -> tuple[list[str], list[str], dict[str, str]]:
    """A prompts file: one prompt per line, `prompt<TAB>demonstration` where one is known."""
    if not os.path.isfile(path):
        raise ValueError(f"prompts file {path!r} does not exist")
    with open(path, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t", 1) for line in file if line.strip()]
    if len(rows) < 2:
        raise ValueError(f"prompts file {path!r} has {len(rows)} prompts; expected at least 2, one per line")
    prompts = [row[0].strip() for row in rows]
    demonstrations = {row[0].strip(): " " + row[1].strip() for row in rows if len(row) == 2}
    n_val = max(1, int(len(prompts) * val_fraction))
    return prompts[:-n_val], prompts[-n_val:], demonstrations


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
    reviews = [random_review(rng) for _ in range(config.n_reviews)]
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
    prompts, demonstrations = make_prompts(config.n_train_prompts + config.n_val_prompts, rng)
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
