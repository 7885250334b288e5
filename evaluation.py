"""Held-out measurement of a policy: RM reward and KL to the reference.

    reward  1/B sum_i f(x_i, y_i), y_i ~ pi(. | x_i), x_i held-out prompts
    KL      1/B sum_i sum_t k_t, k1_t = log pi(y_t) - log pi_ref(y_t), and
            k3_t = (rho - 1) - log rho, rho = pi_ref / pi (Schulman 2020)

Both KL estimators are unbiased under the sampling distribution; k1 is
what PPO's penalty and J use, k3 (>= 0) a check on it.

Wiring, not a stage: `setup` is run.Setup (tokenizer, RM, prompts), and
the sampler and log-probs are ppo.py's.
"""

from dataclasses import dataclass

import torch

import coalitions
import estimators
import ppo
import report
import sampling
import task

SAMPLE_PROMPTS = 6  # held-out prompts of samples.md


@dataclass
class Drawn:
    """Responses drawn for prompts, as CPU tensors."""

    prompts: list[str]
    """the prompt texts"""
    prompt_ids: torch.Tensor
    """(B, P) left-padded"""
    prompt_mask: torch.Tensor
    """(B, P)"""
    response_ids: torch.Tensor
    """(B, T)"""
    response_mask: torch.Tensor
    """(B, T) 1 up to and including EOS"""


@dataclass
class Scored:
    """Responses as texts, with RM scores and sequence KL."""

    responses: list[str]
    """the response texts"""
    scores: torch.Tensor
    """f(x, y) (B,)"""
    kl: torch.Tensor
    """sum_t k1_t (B,)"""
    kl_k3: torch.Tensor
    """sum_t k3_t (B,)"""


def encode(setup, prompts: list[str]) -> dict:
    """The prompts as left-padded ids and mask, (B, P) each."""
    return setup.tokenizer(prompts, return_tensors="pt", padding=True)


@torch.no_grad()
def draw(setup, policy, prompts, config, seed: int) -> Drawn:
    """Responses of `policy`, drawn by a generator seeded by
    `seed`: the same draws for every policy, no training RNG."""
    enc = encode(setup, prompts)
    device = next(policy.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    pad = setup.tokenizer.pad_token_id
    eos = setup.tokenizer.eos_token_id
    prompt_ids = enc["input_ids"].to(device)  # (B, P)
    prompt_mask = enc["attention_mask"].to(device)  # (B, P)
    ids, mask = sampling.sample(
        policy, prompt_ids, prompt_mask, config, pad, eos, generator=generator
    )  # (B, T) each
    return Drawn(prompts, enc["input_ids"], enc["attention_mask"], ids.cpu(), mask.cpu())


@torch.no_grad()
def scored(setup, policy, ref_policy, config, drawn: Drawn) -> Scored:
    """The responses as texts, their RM scores f(x, y) and
    their sequence KL to the reference (k1 and k3)."""
    tokenizer = setup.tokenizer
    _, pieces = coalitions.response_texts(
        tokenizer, drawn.prompt_ids, drawn.response_ids, drawn.response_mask
    )
    responses = ["".join(row) for row in pieces]
    device = next(policy.parameters()).device
    prompt_ids = drawn.prompt_ids.to(device)  # (B, P)
    prompt_mask = drawn.prompt_mask.to(device)  # (B, P)
    response_ids = drawn.response_ids.to(device)  # (B, T)
    mask = drawn.response_mask.to(device)  # (B, T)
    tokens = (prompt_ids, prompt_mask, response_ids, mask)
    drawn_as = sampling.drawn_as(config, tokenizer.eos_token_id)
    logprobs, _, _ = sampling.response_logprobs(policy, *tokens, **drawn_as)
    ref_logprobs, _, _ = sampling.response_logprobs(ref_policy, *tokens, **drawn_as)
    k1 = estimators.kl_per_token(logprobs, ref_logprobs, mask, "k1")  # (B, T)
    k3 = estimators.kl_per_token(logprobs, ref_logprobs, mask, "k3")  # (B, T)
    scores = setup.reward_fn(drawn.prompts, responses)  # (B,)
    return Scored(responses, scores, k1.sum(1), k3.sum(1))


@torch.no_grad()
def evaluate(trainer: ppo.PPOTrainer, setup, count: int) -> dict:
    """Held-out reward and KL (k1, k3) on the first `count`
    held-out prompts, drawn with the trainer's generator."""
    prompts = setup.task.val_prompts[:count]
    enc = encode(setup, prompts)
    prompt_ids = enc["input_ids"]  # (B, P)
    prompt_mask = enc["attention_mask"]  # (B, P)
    ids, mask = trainer.generate(prompt_ids, prompt_mask)  # (B, T)
    drawn = Drawn(prompts, prompt_ids, prompt_mask, ids, mask)
    policy, ref_policy = trainer.policy, trainer.ref_policy
    result = scored(setup, policy, ref_policy, trainer.config, drawn)
    return {
        "reward": result.scores.mean().item(),
        "kl": result.kl.mean().item(),
        "kl_k3": result.kl_k3.mean().item(),
    }


def samples(setup, policy, config, seed: int) -> list[dict]:
    """samples.md's rows: responses to the first SAMPLE_PROMPTS
    held-out prompts, with RM score, sequence KL and EOS."""
    prompts = setup.task.val_prompts[:SAMPLE_PROMPTS]
    drawn = draw(setup, policy, prompts, config, seed)
    reference = setup.task.policy
    result = scored(setup, policy, reference, config, drawn)
    mask = drawn.response_mask  # (B, T)
    last = mask.sum(1, keepdim=True) - 1  # (B, 1)
    last_ids = drawn.response_ids.gather(1, last)  # (B, 1)
    eos = setup.tokenizer.eos_token_id
    ends = (last_ids.squeeze(1) == eos).tolist()  # (B,)
    rows = zip(prompts, result.responses, ends, result.scores.tolist(), result.kl.tolist())
    keys = ("prompt", "response", "eos", "score", "kl")
    return [dict(zip(keys, row)) for row in rows]


def credit_table(setup, drawn: Drawn, credit: dict) -> dict:
    """What tokens.html shows: each arm's per-token reward r'_t
    (B, T) on `drawn`, and its Pearson correlation over all real
    tokens with the embedded task's two truths:

      "Shapley truth"  exact Shapley values of the true game
                       (for `not great`: -2 on `not`, 0 on `great`)
      "lexicon"        each adjective its signed strength

    End-to-end fidelity: the RM and the explainer together.
    """
    mask = drawn.response_mask  # (B, T)
    lengths = mask.sum(1).tolist()
    tokens = [
        setup.tokenizer.convert_ids_to_tokens(row[: int(n)]) for row, n in zip(drawn.response_ids, lengths)
    ]
    truths = {}
    if setup.task.embedded:
        ids, prompts = drawn.response_ids, drawn.prompts
        for truth, name in [("Shapley truth", "true_shapley"), ("lexicon", "lexicon")]:
            truths[truth] = task.true_credit(setup.task, name, prompts, ids, mask)
    fidelity = {
        name: {t: report.fidelity(values, rows, mask) for t, rows in truths.items()}
        for name, values in credit.items()
    }
    return {
        "prompts": drawn.prompts,
        "tokens": tokens,
        "fidelity": fidelity,
        "credit": {name: values.tolist() for name, values in credit.items()},
        "truths": {truth: rows.tolist() for truth, rows in truths.items()},
    }
