"""Where prompts, the SFT policy, the reward model and demonstrations come from.

The default is an *embedded* task that builds in about 2 minutes on a CPU with no network: reviews
of a synthetic language whose sentiment, and so the truth of every token's credit, is known exactly
(`language.py`); one sentence by default, several sized to a response range with
`TaskConfig.response_tokens` (run.py --reviews sized).

    reward model  a 2-layer BERT classifier trained with ~15% random [UNK] masking (the masked
                  texts SHAP and LIME feed it stay in distribution); score = logit_pos - logit_neg
    SFT policy    a 2-layer GPT-2 trained on balanced reviews: every PPO run starts from it
    prompts       the first 2-4 words of held-out reviews, each with a positive demonstration

Built models are cached by settings and read back by `from_pretrained`, which also takes a hub
name or a local path: a real setup (a GPT-2 policy, a DistilBERT IMDb RM) is one option away.
"""

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from language import (
    CLAUSE_SLOTS,
    VOCABULARY,
    random_clause,
    random_review,
    review_value,
    true_shapley_credit,
    true_token_credit,
)
from loading import load_policy, load_reward_model, quiet_transformers, read_prompts

CACHE_VERSION = 6  # bump when the generator or the training recipe changes


# ---- Tokenizers: word level, whitespace split (so offsets exist), one shared vocabulary ----
def make_tokenizer(
    first_token: str, padding_side: str, words: list[str] = VOCABULARY
) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer of `words` (the special tokens first) that puts `first_token`
    ([BOS] policy, [CLS] RM) in front."""
    vocab = {word: i for i, word in enumerate(words)}
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
    build_processes: int = 1  # 2: the policy trains in a process of its own beside the RM (same models)
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
def reward_model_batches(reviews: list[list[str]], config: TaskConfig, rng) -> list[tuple]:
    """The RM's training data, one (texts, values) pair a step: reviews with words randomly [UNK]-masked,
    each valued by what stays visible (`review_value`). Drawn before any training, so that the policy's
    data, drawn next from the same `rng`, is known before the RM trains (and both can train at once)."""
    sized = config.response_tokens is not None
    batches = []
    for _ in range(config.sized_rm_steps if sized else config.rm_steps):
        batch = rng.sample(reviews, config.batch(128))
        if sized:  # as many one-sentence reviews: where each word's and each `not`'s signal is strong
            batch += [random_review(rng) for _ in batch]
        visible = [[rng.random() >= config.rm_mask_prob for _ in words] for words in batch]
        texts = [" ".join(w if v else "[UNK]" for w, v in zip(*pair)) for pair in zip(batch, visible)]
        values = torch.tensor([review_value(w, v) for w, v in zip(batch, visible)]).float()  # (B,)
        batches.append((texts, values))
    return batches


def make_reward_model(config: TaskConfig) -> torch.nn.Module:
    """A tiny BERT classifier, freshly initialised (from torch's global generator)."""
    size = dict(
        vocab_size=len(VOCABULARY), max_position_embeddings=config.positions(), pad_token_id=0, num_labels=2
    )
    layers = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    labels = dict(id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    plain = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
    bert = transformers.BertConfig(**size, **layers, **labels, **plain)
    return transformers.BertForSequenceClassification(bert)


def train_reward_model(model, batches, tokenizer, config: TaskConfig) -> torch.nn.Module:
    """Regress the margin `logit_pos - logit_neg` (MSE) onto each masked review's value: a graded reward
    whose sign is the label (cross-entropy learns the sign far slower at this size)."""
    sized = config.response_tokens is not None
    lr = 3e-3 if sized else 5e-3
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=len(batches))
    model.train()
    for texts, values in batches:
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits  # (B, 2)
        loss = F.mse_loss(logits[:, 1] - logits[:, 0], values)
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


def train_policy_from(reviews: list[list[str]], tokenizer, config: TaskConfig, rng_state, torch_state):
    """`train_policy` from the states of both generators, in this process or another: (policy, the
    rng's state after it). The weights are the same either way, bit for bit."""
    torch.set_num_threads(1)
    torch.set_rng_state(torch_state)  # the GPT-2's initial weights
    rng = random.Random()
    rng.setstate(rng_state)  # its batches
    return train_policy(reviews, tokenizer, config, rng), rng.getstate()


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
    ignored = ("cache_dir", "policy", "reward_model", "prompts", "build_processes")  # not what is built
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
        reward_model = make_reward_model(config)  # torch's generator: the RM's weights, then the policy's
        batches = reward_model_batches(reviews, config, rng)
        policy_job = (reviews, policy_tokenizer, config, rng.getstate(), torch.get_rng_state())
        if config.build_processes > 1:  # the policy trains in a second process while the RM trains here
            spawn = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                policy_run = pool.submit(train_policy_from, *policy_job)
                reward_model = train_reward_model(reward_model, batches, reward_tokenizer, config)
                policy, rng_state = policy_run.result()
        else:
            reward_model = train_reward_model(reward_model, batches, reward_tokenizer, config)
            policy, rng_state = train_policy_from(*policy_job)
        rng.setstate(rng_state)  # the prompts are drawn after both trainings' data
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
            return (
                f"--max-new-tokens {max_new_tokens}: the longest prompt and its response need {needed} "
                f"positions; the {what} holds {holds}{hint}"
            )
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
