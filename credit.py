"""The credit methods and the baselines of run.py, each registered once.

A credit method attributes the sequence reward R over the response tokens. Registered in
CREDIT_METHODS, it is a `--components` entry (a weight w_k the BO searches) and, unless its
record says otherwise, a baseline arm trained on it alone:

    attention     alpha_t, the RM's attention (ABC)   c_t = alpha_t R           (shares)
    shap          phi_t, Shapley values of the RM     c_t = phi_t + residual
    lime          beta_t, LIME's surrogate            c_t = beta_t + residual
    true_shapley  the embedded task's exact Shapley credit (an oracle)
    lexicon       each adjective its signed strength  (an oracle)

shaping.py turns each into a component c^k with sum_t c^k_t = R. sparse and uniform are
shaping's own. A baseline is a fixed point w of the simplex with the reward it trains on.

Adding an estimator: write f(setup, batch) -> (B, T) and add one CreditMethod line here.
Wiring, not a stage: it calls reward_attribution.py and task.py.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

import coalitions
import reward_attribution
import shaping
import task


@dataclass(frozen=True)
class Training:
    """What an arm's PPO trains on besides its weights.

    Data the arm carries, never read from its name.
    """

    reward: str = "rm"
    """the sequence reward R the credit spreads: 'rm' (f(x, y))
    or 'rcfd' (-(f(x, y) - f(x, y_demo))^2, Rita et al. 2024)"""
    kl_penalty: bool = True
    """False: PPO trains with kl_coef 0 (RCfD)"""


ON_THE_RM = Training()  # the BO's trials and confirmations


@dataclass(frozen=True)
class Baseline:
    """A fixed arm: its credit weights w_k and how it trains."""

    weights: dict[str, float]
    """credit weights on the simplex"""
    training: Training = ON_THE_RM
    """the reward and the KL penalty it trains with"""


RCFD = Training(reward="rcfd", kl_penalty=False)
BASELINES = {  # and each credit method alone: all_baselines
    "sparse": Baseline({"sparse": 1.0}),
    "uniform": Baseline({"uniform": 1.0}),
    # ABC, beta = 0.8 (Chan et al. 2024)
    "abc": Baseline({"attention": 0.8, "sparse": 0.2}),
    "rcfd": Baseline({"sparse": 1.0}, RCFD),
}


@dataclass
class Responses:
    """One batch of responses, as every credit method reads it."""

    prompts: list[str]
    """the prompt texts"""
    pieces: list[list[str]]
    """per response, the text piece of each real token"""
    response_ids: torch.Tensor
    """(B, T) policy token ids"""
    response_mask: torch.Tensor
    """(B, T) 1 on real tokens"""
    explained_fn: Callable | coalitions.TokenReward
    """coalitions -> R, what SHAP and LIME explain: a
    reward function of texts, or one of RM token ids"""


def explanation(method: str, setup, batch: Responses) -> torch.Tensor:
    """reward_attribution's `method` explaining R: (B, T).

    setup: run.Setup (the RM, its tokenizer, the explainers' settings).
    """
    values, _ = reward_attribution.attribute_texts(
        method,
        batch.prompts,
        batch.pieces,
        batch.explained_fn,
        setup.attribution,
        setup.task.reward_model,
        setup.task.reward_tokenizer,
    )
    T = batch.response_mask.shape[1]
    width = T - values.shape[1]  # all responses shorter than T
    return F.pad(values, (0, width))  # (B, T)


def truth(name: str, setup, batch: Responses) -> torch.Tensor:
    """The embedded task's own credit `name`: (B, T).

    No explainer: the game its RM was trained on.
    """
    ids, mask = batch.response_ids, batch.response_mask
    return task.true_credit(setup.task, name, batch.prompts, ids, mask)


@dataclass(frozen=True)
class CreditMethod:
    """How one credit component is estimated."""

    attribute: Callable[..., torch.Tensor]
    """(setup, batch) -> attributions (B, T), 0 past the mask"""
    shares: bool = False
    """alpha_t >= 0 renormalised: c_t = alpha_t R; else
    reward units, completed by the residual"""
    oracle: bool = False
    """the embedded task's truth: a real model pair has none"""
    baseline: bool = True
    """also a baseline arm trained on it alone"""


ATTENTION = partial(explanation, "attention")
CREDIT_METHODS = {
    # ABC's: a baseline with sparse (BASELINES)
    "attention": CreditMethod(ATTENTION, shares=True, baseline=False),
    "shap": CreditMethod(partial(explanation, "shap")),
    "lime": CreditMethod(partial(explanation, "lime")),
    "true_shapley": CreditMethod(partial(truth, "true_shapley"), oracle=True),
    "lexicon": CreditMethod(partial(truth, "lexicon"), oracle=True),
}


def all_baselines() -> dict[str, Baseline]:
    """BASELINES, then each credit method alone (if a baseline)."""
    methods = CREDIT_METHODS.items()
    alone = {n: Baseline({n: 1.0}) for n, m in methods if m.baseline}
    return BASELINES | alone


def credit_names() -> tuple[str, ...]:
    """Every component a weight may name: shaping's and ours."""
    return (*shaping.BUILT_IN, *CREDIT_METHODS)


def shares() -> tuple[str, ...]:
    """The methods whose attributions are shares alpha_t of R."""
    return tuple(n for n, m in CREDIT_METHODS.items() if m.shares)


def oracles() -> set[str]:
    """The methods that are the embedded task's truth."""
    return {n for n, m in CREDIT_METHODS.items() if m.oracle}


def on_the_simplex(baseline: Baseline, components) -> bool:
    """Whether the BO could have asked for this baseline: it
    trains as the trials do, on their components."""
    same = baseline.training == ON_THE_RM
    return same and set(baseline.weights) <= set(components)
