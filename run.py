"""python run.py: explainable dense reward shaping for RLHF, end to end (Koo et al. 2025).

    outer:  w* = argmax_w  J(pi_w)                     bayes_opt.py  (GP + expected improvement)
    inner:  pi_w = PPO on  r'_t(w) = sum_k w_k c^k_t   ppo.py, shaping.py, reward_attribution.py

Every arm is a full PPO run from the same SFT reference with the same budget:
  1. baselines  sparse RLHF, uniform, ABC (attention, beta = 0.8, Chan et al. 2024), SHAP only,
                LIME only, RCfD (sparse, R = -(f(x,y) - f(x,y_demo))^2, KL 0, Rita et al. 2024)
  2. BO trials  weights over (sparse, attention, SHAP, LIME); J = mean over the held-out
                evaluations of (reward - kl_coef * KL to the reference), the KL-regularised
                reward PPO itself maximises, so drifting from the reference cannot raise J;
                the baselines that are points of this simplex are told to the BO first
  3. confirm    the best weights and sparse again, at fresh seeds
  4. report     reward against KL (the frontier), at matched KL, with 95% intervals over seeds

This is the only file that wires the stages together, in that order from top to bottom; the
command line and the output folder come last (the options themselves are in cli.py). Finished
arms and trials are kept in the output folder, so an interrupted run picks up where it stopped.
"""

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import cli
from cli import Options, fail, locked, parse

if __name__ == "__main__":  # --help and a malformed option answer before seconds of imports, and the
    cli.pin_numerics(cli.option_parser().parse_args().numerics)  # CPU numerics are set before torch loads

import numpy as np
import torch
from tqdm.auto import tqdm

import bayes_opt
import outputs
import parallel
import ppo
import report
import reward_attribution
import scoring
import shaping
import task
from report import Arm


@dataclass(frozen=True)
class Training:
    """What an arm's PPO trains on besides its weights: data the arm carries, never read from its name."""

    reward: str = "rm"
    """the sequence reward R the credit spreads: 'rm' (f(x, y)) or 'rcfd' (-(f(x, y) - f(x, y_demo))^2)"""
    kl_penalty: bool = True
    """False: PPO trains with kl_coef 0 (RCfD, Rita et al. 2024)"""


ON_THE_RM = Training()  # the BO's trials and the confirmation arms: R = f(x, y), with the KL penalty


@dataclass(frozen=True)
class Baseline:
    """A fixed arm: its credit weights w_k and how it trains."""

    weights: dict[str, float]
    """credit weights on the simplex"""
    training: Training = ON_THE_RM
    """the reward and the KL penalty it trains with"""


BASELINES = {  # and each credit method alone (all_baselines)
    "sparse": Baseline({"sparse": 1.0}),
    "uniform": Baseline({"uniform": 1.0}),
    "abc": Baseline({"attention": 0.8, "sparse": 0.2}),  # ABC, beta = 0.8 (Chan et al. 2024)
    "rcfd": Baseline({"sparse": 1.0}, Training(reward="rcfd", kl_penalty=False)),  # Rita et al. 2024
}
TRIAL_SEED_OFFSET = 100  # trial k trains with seed + 100 + k, apart from the confirmation seeds
SAMPLE_PROMPTS = 6  # held-out prompts of samples.md


def objective(arm: Arm, kind: str = "regularised") -> float:
    """J(w), what the outer loop maximises, from the held-out curve of the arm that trained with w:

        regularised  J = 1/E sum_{e=1..E} (reward_e - kl_coef KL_e)    (--objective regularised, the default)
        auc          J = 1/E sum_{e=1..E} reward_e                      (--objective auc)

    over the E held-out evaluations after the start (e = 0 is the SFT policy itself): reward_e the mean
    RM score of sampled held-out responses, KL_e their mean sequence KL to the reference (k1), kl_coef
    the run's --kl-coef. The regularised J is the KL-regularised reward PPO itself maximises, so drifting
    from the reference alone cannot raise it; averaging over the curve keeps "good, and fast" in it.
    """
    kl_coef = arm.kl_coef if kind == "regularised" else 0.0
    return float(np.mean([point["reward"] - kl_coef * point["kl"] for point in arm.curve[1:]]))


# ---------------------------------------------------------------------------------------
# What every arm shares
# ---------------------------------------------------------------------------------------
@dataclass
class Setup:
    """The task, the reward function and the fixed stage configurations, shared by every arm."""

    task: task.Task
    """policy and RM with their tokenizers, prompts, demonstrations"""
    reward_fn: Callable[[list[str], list[str]], torch.Tensor]
    """(prompts, responses) -> RM scores f(x, y) (N,)"""
    rcfd_reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None
    """(prompts, responses) -> R_cfd (N,) for the RCfD arm; None when a prompt has no demonstration"""
    attribution: reward_attribution.AttributionConfig
    """how SHAP, LIME and attention explain the RM"""
    ppo_config: ppo.PPOConfig
    """PPO settings shared by every arm (each arm sets its own seed)"""
    token_reward: reward_attribution.TokenReward | None = None
    """f over the RM's token ids where the RM reads the policy's tokens (the embedded task): SHAP and
    LIME build their coalitions as ids, with no text round trip; None: they score texts"""

    @property
    def tokenizer(self):
        return self.task.policy_tokenizer


def build_setup(options: Options) -> Setup:
    where = {name: getattr(options, name) for name in ("cache_dir", "policy", "reward_model", "prompts")}
    sized = (options.min_new_tokens, options.max_new_tokens) if options.reviews == "sized" else None
    the_task = task.build_task(task.TaskConfig(**where, response_tokens=sized))
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    the_task.reward_model.to(auto if options.device == "auto" else options.device)
    scorer = scoring.sdpa_view(the_task.reward_model)  # the RM's weights behind the SDPA kernel: every score

    def reward_fn(prompts, responses):
        return scoring.score(scorer, the_task.reward_tokenizer, prompts, responses)

    def score_ids(input_ids, attention_mask):
        return scoring.score_ids(scorer, input_ids, attention_mask)

    has_demos = all(the_task.demonstrations.get(p) is not None for p in the_task.train_prompts)
    reward_tokenizer = the_task.reward_tokenizer
    mask_string = (None if the_task.embedded else reward_tokenizer.mask_token) or reward_tokenizer.unk_token
    token_reward = None  # the embedded task's policy and RM share one word-level tokenizer: coalitions as ids
    if the_task.embedded:
        token_reward = reward_attribution.TokenReward(
            reward_tokenizer, score_ids, scorer.config.max_position_embeddings
        )
    return Setup(
        task=the_task,
        reward_fn=reward_fn,
        rcfd_reward_fn=shaping.rcfd_reward_fn(reward_fn, the_task.demonstrations) if has_demos else None,
        attribution=reward_attribution.AttributionConfig(
            mask_string,
            shap_backend=options.shap_backend,
            shap_permutations=options.shap_permutations,
            lime_backend=options.lime_backend,
            lime_samples=options.lime_samples,
            seed=options.seed,
        ),
        ppo_config=ppo.PPOConfig(**{name: getattr(options, name) for name in cli.PPO_OPTIONS}),
        token_reward=token_reward,
    )


# ---------------------------------------------------------------------------------------
# The credit methods: each one attribution of R over the response tokens, registered once
# ---------------------------------------------------------------------------------------
@dataclass
class Responses:
    """One batch of responses, as every credit method reads it."""

    prompts: list[str]
    """the prompt texts"""
    pieces: list[list[str]]
    """per response, the text piece of each real token (reward_attribution.response_texts)"""
    response_ids: torch.Tensor
    """(B, T) policy token ids"""
    response_mask: torch.Tensor
    """(B, T) 1 on real tokens"""
    explained_fn: Callable | reward_attribution.TokenReward
    """coalitions -> R, what SHAP and LIME explain: a reward function of texts, or of RM token ids"""


def explanation(method: str, setup: Setup, batch: Responses) -> torch.Tensor:
    """reward_attribution's `method` (SHAP, LIME or attention) explaining R: (B, T)."""
    values, _ = reward_attribution.attribute_texts(
        method,
        batch.prompts,
        batch.pieces,
        batch.explained_fn,
        setup.attribution,
        setup.task.reward_model,
        setup.task.reward_tokenizer,
    )
    width = batch.response_mask.shape[1] - values.shape[1]  # responses shorter than the batch's T
    return torch.nn.functional.pad(values, (0, width))  # (B, T)


def truth(name: str, setup: Setup, batch: Responses) -> torch.Tensor:
    """The embedded task's own credit `name` (no explainer: the game its RM was trained on): (B, T)."""
    return task.true_credit(setup.task, name, batch.prompts, batch.response_ids, batch.response_mask)


@dataclass(frozen=True)
class CreditMethod:
    """How one credit component is estimated; registered in CREDIT_METHODS, it is a --components entry
    (a weight the BO searches) and, unless its record says otherwise, a baseline of its name."""

    attribute: Callable[[Setup, Responses], torch.Tensor]
    """(setup, batch) -> attributions (B, T), zero outside the response mask"""
    shares: bool = False
    """alpha_t >= 0, renormalised: c_t = alpha_t R; else reward units, completed by the residual"""
    oracle: bool = False
    """the embedded task's truth: a real model pair has none"""
    baseline: bool = True
    """also a baseline arm trained on this component alone"""


CREDIT_METHODS = {
    "attention": CreditMethod(partial(explanation, "attention"), shares=True, baseline=False),  # ABC's
    "shap": CreditMethod(partial(explanation, "shap")),
    "lime": CreditMethod(partial(explanation, "lime")),
    "true_shapley": CreditMethod(partial(truth, "true_shapley"), oracle=True),
    "lexicon": CreditMethod(partial(truth, "lexicon"), oracle=True),
}


def all_baselines() -> dict[str, Baseline]:
    """BASELINES, then each credit method alone (where its record makes it a baseline)."""
    alone = {name: Baseline({name: 1.0}) for name, method in CREDIT_METHODS.items() if method.baseline}
    return BASELINES | alone


def credit_names() -> tuple[str, ...]:
    """Every credit component a weight may name: shaping's built-in ones and the registered methods."""
    return (*shaping.BUILT_IN, *CREDIT_METHODS)


# ---------------------------------------------------------------------------------------
# The reward: score -> explanations -> per-token shaped reward
# ---------------------------------------------------------------------------------------
def reward_components(setup: Setup, prompt_ids, response_ids, response_mask, methods, reward="rm"):
    """Credit components c^k (each (B, T), summing to R) for the explanations in `methods`, and f(x, y) (B,).

    R is f(x, y) (reward 'rm'), or the RCfD score -(f(x, y) - f(x, y_demo))^2 (reward 'rcfd'), which
    SHAP and LIME then explain.
    """
    prompts, pieces = reward_attribution.response_texts(
        setup.tokenizer, prompt_ids, response_ids, response_mask
    )
    responses = ["".join(row) for row in pieces]
    scores = setup.reward_fn(prompts, responses)  # (B,) f(x, y)
    explained_fn = setup.token_reward or setup.reward_fn  # coalitions -> R
    sequence_reward = scores  # (B,) R
    if reward == "rcfd":
        explained_fn = setup.rcfd_reward_fn
        sequence_reward = explained_fn(prompts, responses)
    batch = Responses(prompts, pieces, response_ids, response_mask, explained_fn)
    attributions = {name: CREDIT_METHODS[name].attribute(setup, batch) for name in methods}  # (B, T) each
    shares = tuple(name for name, method in CREDIT_METHODS.items() if method.shares)
    return shaping.credit_components(sequence_reward, response_mask, attributions, shares), scores


# ---------------------------------------------------------------------------------------
# Held-out evaluation: reward and KL to the reference
# ---------------------------------------------------------------------------------------
@dataclass
class Scored:
    """Responses to held-out prompts as texts, with their RM scores and sequence KL to the reference."""

    responses: list[str]
    """the response texts"""
    scores: torch.Tensor
    """f(x, y) (B,)"""
    kl: torch.Tensor
    """sum_t k1_t (B,), k1 = log(pi / pi_ref) (ppo.kl_per_token)"""
    kl_k3: torch.Tensor
    """sum_t k3_t (B,), k3 = (rho - 1) - log(rho), rho = pi_ref / pi"""


@torch.no_grad()
def evaluate(trainer: ppo.PPOTrainer, setup: Setup, options: Options) -> dict[str, float]:
    """Held-out reward and KL on the first `eval_prompts` held-out prompts.

    reward: mean RM score of sampled responses. KL: mean sequence KL of the same responses to
    the reference, estimated under the sampling distribution, k1 and k3 (Schulman 2020).
    """
    prompts = setup.task.val_prompts[: options.eval_prompts]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]  # (B, P) each
    response_ids, response_mask = trainer.generate(prompt_ids, prompt_mask)  # (B, T) each
    policies = (trainer.policy, trainer.ref_policy)
    responses = (prompt_ids, prompt_mask, response_ids, response_mask)
    result = scored(setup, *policies, trainer.config, prompts, *responses)
    return {
        "reward": result.scores.mean().item(),
        "kl": result.kl.mean().item(),
        "kl_k3": result.kl_k3.mean().item(),
    }


@torch.no_grad()
def scored(
    setup: Setup, policy, ref_policy, config, prompts, prompt_ids, prompt_mask, response_ids, response_mask
) -> Scored:
    """Responses (CPU tensors) as texts, with their RM scores f(x, y) and sequence KL to the reference."""
    _, pieces = reward_attribution.response_texts(setup.tokenizer, prompt_ids, response_ids, response_mask)
    responses = ["".join(p) for p in pieces]
    device = next(policy.parameters()).device
    tokens = [t.to(device) for t in (prompt_ids, prompt_mask, response_ids, response_mask)]
    mask = tokens[3]  # (B, T) response_mask on the policy's device
    drawn_as = ppo.drawn_as(config, setup.tokenizer.eos_token_id)
    logprobs, _, _ = ppo.response_logprobs(policy, *tokens, **drawn_as)  # (B, T)
    ref_logprobs, _, _ = ppo.response_logprobs(ref_policy, *tokens, **drawn_as)  # (B, T)
    k1 = ppo.kl_per_token(logprobs, ref_logprobs, mask, "k1")  # (B, T)
    k3 = ppo.kl_per_token(logprobs, ref_logprobs, mask, "k3")  # (B, T)
    scores = setup.reward_fn(prompts, responses)  # (B,)
    return Scored(responses, scores, k1.sum(1), k3.sum(1))


def samples(setup: Setup, policy, config: ppo.PPOConfig, seed: int) -> list[dict]:
    """samples.md's rows: responses to the first SAMPLE_PROMPTS held-out prompts with RM score and sequence
    KL, drawn by a generator seeded by `seed` (the same draws for every policy; the training RNG untouched)"""
    prompts = setup.task.val_prompts[:SAMPLE_PROMPTS]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]  # (B, P) each
    device = next(policy.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    on_device = (prompt_ids.to(device), prompt_mask.to(device))
    response_ids, response_mask = ppo.sample(policy, *on_device, config, pad, eos, generator=generator)
    response_ids, response_mask = response_ids.cpu(), response_mask.cpu()  # (B, T) each
    responses = (prompt_ids, prompt_mask, response_ids, response_mask)
    result = scored(setup, policy, setup.task.policy, config, prompts, *responses)
    last = response_mask.sum(1, keepdim=True) - 1  # (B, 1) each response's last position
    ends = (response_ids.gather(1, last).squeeze(1) == eos).tolist()  # (B,) it ended with EOS
    rows = zip(prompts, result.responses, ends, result.scores.tolist(), result.kl.tolist())
    return [dict(prompt=p, response=r, eos=e, score=s, kl=k) for p, r, e, s, k in rows]


# ---------------------------------------------------------------------------------------
# The inner loop: one PPO run from the SFT reference
# ---------------------------------------------------------------------------------------
def train_arm(arm: Arm, training: Training, setup: Setup, options: Options) -> Arm:
    """Train a fresh policy on the shaped reward r'_t(w); fill in (and keep) the arm's curve and samples.

    r'_t(w) = sum_k w_k c^k_t          (shaping.shape; c^k spread R, training.reward)
    PPO on r'_t - kl_coef KL_t          (ppo.py; kl_coef 0 without training.kl_penalty)
    """
    config = replace(setup.ppo_config, seed=arm.seed)
    if not training.kl_penalty:
        config = replace(config, kl_coef=0.0, target_kl=None)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    policy = copy.deepcopy(setup.task.policy)
    trainer = ppo.PPOTrainer(policy, config, pad, eos, ref_policy=setup.task.policy)
    rng = np.random.default_rng(arm.seed)
    methods = [m for m in CREDIT_METHODS if arm.weights.get(m, 0) > 0]  # explanations cost RM rows
    scalars = report.Scalars(os.path.join(options.out, "tensorboard", arm.name), on=options.tensorboard)
    train_kl, start = 0.0, time.time()
    for iteration in tqdm(range(options.iterations + 1), desc=arm.name, leave=False, disable=None):
        if iteration % options.eval_every == 0 or iteration == options.iterations:
            point = {"iteration": iteration, **evaluate(trainer, setup, options), "train_kl": train_kl}
            if not all(math.isfinite(v) for v in point.values()):
                raise RuntimeError(f"arm {arm.name}, iteration {iteration}: a non-finite evaluation {point}")
            arm.curve.append(point)
            scalars.add("eval", {k: point[k] for k in ("reward", "kl", "kl_k3")}, iteration)
        if iteration == options.iterations:
            break
        prompts = options.batch_size // config.group_size  # the rollout answers each G times
        rows = rng.choice(len(setup.task.train_prompts), prompts, replace=False)
        enc = setup.tokenizer([setup.task.train_prompts[i] for i in rows], return_tensors="pt", padding=True)
        rollout = trainer.rollout(enc["input_ids"], enc["attention_mask"])
        prompt_ids, response_ids = rollout.prompt_ids.cpu(), rollout.response_ids.cpu()  # (B, P), (B, T)
        response_mask = rollout.response_mask.cpu()  # (B, T)
        responses = (prompt_ids, response_ids, response_mask)
        components, scores = reward_components(setup, *responses, methods, training.reward)
        token_rewards = shaping.shape(components, arm.weights)  # (B, T) r'_t(w)
        stats = trainer.update(rollout, token_rewards, scores)
        scalars.add("train", {"reward" if k == "score" else k: v for k, v in stats.items()}, iteration + 1)
        train_kl = stats["kl"]
    arm.seconds = time.time() - start
    scalars.close()
    arm.samples = samples(setup, trainer.policy, config, options.seed)
    if outputs.saves_policy(arm, options):
        report.save_policy(outputs.policy_path(options, arm.name), trainer.policy, setup.tokenizer, config)
    report.write_json(outputs.arm_path(options, arm.name), arm.to_json())
    return arm


# ---------------------------------------------------------------------------------------
# The outer loop, with the baselines before it and the confirmation after it
# ---------------------------------------------------------------------------------------
def experiment(setup: Setup, options: Options) -> dict:
    """Baselines, the BO loop, confirmation and report.

    workers.train(train_arm, batch) calls train_arm(arm, training, setup, options) for each (arm, training)
    of the batch, in this process or in workers (parallel.py), and returns the arms in the batch's order;
    an arm whose file an interrupted run left (same weights and seed) is read back instead (finished_arm).
    """
    kl_coef = options.kl_coef
    with parallel.workers(options, setup, build_setup, outputs.finished_arm) as workers:
        # 1. Baselines: each a full PPO run from the SFT reference with the same budget.
        baselines = chosen_baselines(setup, options)
        batch = [
            (Arm(name, "baseline", name, b.weights, options.seed, kl_coef), b.training)
            for name, b in baselines.items()
        ]
        arms = {arm.name: arm for arm in workers.train(train_arm, batch)}

        # 2. Bayesian optimisation of the weights: ask w -> train a fresh policy on r'(w) -> tell J(w).
        components = options.components.split(",")
        optimizer = bayes_opt.BayesOpt(components, os.path.join(options.out, "trials.jsonl"), options.seed)
        first = tell_baselines(optimizer, arms, baselines, options)  # free observations of J (same budget)
        arms |= outputs.finished_trials(optimizer, first, options)  # the trials of an interrupted run
        while (k := len(optimizer.trials) - first) < options.trials:
            asked = optimizer.ask(min(options.bo_batch, options.trials - k))  # a batch of weights w
            batch = []
            for j, weights in enumerate(asked):  # trial k + j: a seed of its own (J is noisy over seeds)
                seed = options.seed + TRIAL_SEED_OFFSET + k + j
                name = f"trial-{first + k + j}"  # its line in trials.jsonl
                batch.append((Arm(name, "trial", "trial", weights, seed, kl_coef), ON_THE_RM))
            for arm in workers.train(train_arm, batch):  # told in the order asked
                arms[arm.name] = arm
                tell(optimizer, arm, options)
        best_weights, _ = optimizer.best()

        # 3. Confirm: the best weights and sparse again, at fresh seeds.
        fresh_seeds = range(options.seed + 1, options.seed + 1 + options.confirm_seeds)
        groups = [("bo-best", best_weights), ("sparse", BASELINES["sparse"].weights)]
        batch = [
            (Arm(f"{g}-seed{s}", "confirm", g, w, s, kl_coef), ON_THE_RM)
            for s in fresh_seeds
            for g, w in groups
        ]
        arms |= {arm.name: arm for arm in workers.train(train_arm, batch)}

    # 4. Report: tables, curves, the frontier and the credit every method gives each token.
    own_reward = {name for name, b in baselines.items() if b.training.reward != "rm"}  # RCfD explains R_cfd
    arm_weights = {name: arm.weights for name, arm in arms.items() if name not in own_reward}
    credit = credit_examples(setup, options, {**arm_weights, "bo-best": best_weights})
    reference = samples(setup, setup.task.policy, setup.ppo_config, options.seed)  # what the arms start from
    saved = [
        outputs.policy_path(options, name) for name, arm in arms.items() if outputs.saves_policy(arm, options)
    ]
    summary = report.write_all(
        options.out, arms, best_weights, credit, reference, objective, saved, options.quick
    )
    print(summary)
    print(f"results in {options.out}: summary.md, samples.md, tokens.html, curves.csv/png, frontier.png")
    return {"arms": arms, "best_weights": best_weights}


def tell(optimizer: bayes_opt.BayesOpt, arm: Arm, options: Options) -> None:
    """Tell the BO J(w) of one finished arm (--objective); the trial log records both objectives."""
    regularised, auc = objective(arm, "regularised"), objective(arm, "auc")
    info = dict(arm=arm.name, regularised=regularised, auc=auc, final=arm.final, kl=arm.final_kl)
    weights = {c: arm.weights.get(c, 0.0) for c in optimizer.names}
    optimizer.tell(weights, info[options.objective], info=info)


def credit_examples(setup: Setup, options: Options, arm_weights: dict) -> dict:
    """The credit each arm's weights give the tokens of SFT responses to held-out prompts.

    On the embedded task each arm's shaped reward r'_t is scored against two truths by Pearson
    correlation over all real tokens (end-to-end fidelity: RM and explainer together):
      "Shapley truth"  exact Shapley values of the task's true sentiment game (what SHAP on a
                       perfect RM returns: for `not great`, -2 on `not` and 0 on `great`)
      "lexicon"        each adjective its signed strength, `not` nothing (what a person points at)
    """
    prompts = setup.task.val_prompts[: options.eval_prompts]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    device = next(setup.task.policy.parameters()).device  # on a GPU once a PPO run used it as its reference
    generator = torch.Generator(device).manual_seed(options.seed)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    prompt_ids, prompt_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)  # (B, P) each
    response_ids, response_mask = ppo.sample(
        setup.task.policy, prompt_ids, prompt_mask, setup.ppo_config, pad, eos, generator=generator
    )
    response_ids, response_mask = response_ids.cpu(), response_mask.cpu()
    methods = [name for name, m in CREDIT_METHODS.items() if setup.task.embedded or not m.oracle]
    components, _ = reward_components(setup, enc["input_ids"], response_ids, response_mask, methods)
    credit = {name: shaping.shape(components, w) for name, w in arm_weights.items()}  # (B, T) each
    lengths = response_mask.sum(1).tolist()
    tokens = [setup.tokenizer.convert_ids_to_tokens(row[: int(n)]) for row, n in zip(response_ids, lengths)]
    truths = {}
    if setup.task.embedded:
        for truth, name in [("Shapley truth", "true_shapley"), ("lexicon", "lexicon")]:
            truths[truth] = task.true_credit(setup.task, name, prompts, response_ids, response_mask)
    fidelity = {
        name: {truth: report.fidelity(values, rows, response_mask) for truth, rows in truths.items()}
        for name, values in credit.items()
    }
    credit = {name: values.tolist() for name, values in credit.items()}
    truths = {truth: rows.tolist() for truth, rows in truths.items()}
    return {"prompts": prompts, "tokens": tokens, "fidelity": fidelity, "credit": credit, "truths": truths}


# ---------------------------------------------------------------------------------------
# The command line and the output folder
# ---------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    options = parse_options(argv)
    if not cli.numerics_in_force(options.numerics):
        fail(f"--numerics {options.numerics}: torch loaded before its settings; run run.py as a script")
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    print(f"building the task (embedded: about a minute the first time, cached in {options.cache_dir})")
    try:
        setup = build_setup(options)
    except ValueError as error:  # a model or prompts file that cannot be loaded: one line, no traceback
        fail(str(error))
    if options.batch_size // options.group_size > len(setup.task.train_prompts):
        prompts = len(setup.task.train_prompts)
        fail(f"--batch-size {options.batch_size} / --group-size {options.group_size}: over {prompts} prompts")
    if too_long := task.position_error(setup.task, options.max_new_tokens):  # before the folder is claimed
        fail(too_long)
    with locked(options.out):
        outputs.claim_output_folder(options)  # only once the models and prompts have loaded
        return experiment(setup, options)


def parse_options(argv=None) -> Options:
    """Parse and check every option before any work: argparse's exit code 2 and one line."""
    parser, options = parse(argv)  # each check that needs the options alone, in cli.py
    if options.ray_address is not None and not parallel.has_ray():
        parser.error("--ray-address needs ray: pip install ray")
    if options.tensorboard and not report.has_tensorboard():
        parser.error("--tensorboard needs tensorboard: pip install tensorboard")
    try:  # every PPO setting, checked by PPOConfig itself (the device included: one line, before any work)
        ppo.PPOConfig(**{name: getattr(options, name) for name in cli.PPO_OPTIONS})
    except ValueError as error:
        parser.error(f"PPO settings: {error}")
    try:  # the explainers' settings, checked by AttributionConfig itself
        explainers = ("shap_backend", "shap_permutations", "lime_backend", "lime_samples")
        reward_attribution.AttributionConfig(**{name: getattr(options, name) for name in explainers})
    except ValueError as error:
        parser.error(f"explainer settings: {error}")
    for name in options.components.split(","):
        if name not in credit_names():
            parser.error(f"unknown credit component {name!r} in --components; expected {credit_names()}")
    for name in options.baselines.split(","):
        if name and name not in all_baselines():
            parser.error(
                f"unknown baseline {name!r} in --baselines; expected some of {tuple(all_baselines())}"
            )
    for path, what in [(options.prompts, "--prompts"), (options.weights, "--weights")]:
        if path is not None and not os.path.isfile(path):
            parser.error(f"{what} file {path!r} does not exist")
    weights = [all_baselines()[name].weights for name in options.baselines.split(",") if name]
    if options.weights is not None:
        try:
            weights.append(report.read_json(options.weights))
            shaping.check_weights(weights[-1], credit_names())
        except (ValueError, AttributeError) as error:
            parser.error(f"--weights file {options.weights!r}: {error}")
    truths = {name for name, method in CREDIT_METHODS.items() if method.oracle}
    oracles = sorted({*options.components.split(","), *(c for w in weights for c in w)} & truths)
    if oracles and (options.policy, options.reward_model, options.prompts) != (None, None, None):
        parser.error(f"credit {oracles} is the embedded task's truth: a real model pair has none")
    for name in (options.save_policy or "").split(","):
        if options.save_policy is not None and name not in ["bo-best", *arm_names(options)]:
            parser.error(f"--save-policy: no arm {name!r} in this run; expected some of {arm_names(options)}")
    return options


def arm_names(options: Options) -> list[str]:
    """The arms a run with these options trains (as experiment() names them; RCfD even where skipped)."""
    baselines = named_baselines(options)
    told = sum(on_the_simplex(b, options.components.split(",")) for b in baselines.values())
    seeds = range(options.seed + 1, options.seed + 1 + options.confirm_seeds)
    confirm = [f"{group}-seed{seed}" for seed in seeds for group in ("bo-best", "sparse")]
    return [*baselines, *(f"trial-{told + k}" for k in range(options.trials)), *confirm]


def named_baselines(options: Options) -> dict[str, Baseline]:
    """The baselines of --baselines, and --weights' as 'custom'."""
    baselines = {name: all_baselines()[name] for name in options.baselines.split(",") if name}
    if options.weights is not None:
        baselines["custom"] = Baseline(report.read_json(options.weights))
    return baselines


def chosen_baselines(setup: Setup, options: Options) -> dict[str, Baseline]:
    """named_baselines, less those whose reward this task cannot give (RCfD without demonstrations)."""
    baselines = named_baselines(options)
    for name, baseline in list(baselines.items()):
        if baseline.training.reward == "rcfd" and setup.rcfd_reward_fn is None:
            print(f"{name} skipped: RCfD needs a demonstration for every training prompt")
            del baselines[name]
    return baselines


def on_the_simplex(baseline: Baseline, components: list[str]) -> bool:
    """Whether the BO could have asked for this baseline: trained as its trials are, on its components."""
    return baseline.training == ON_THE_RM and set(baseline.weights) <= set(components)


def tell_baselines(optimizer, arms: dict[str, Arm], baselines: dict[str, Baseline], options) -> int:
    """Tell the BO the J of each baseline on its simplex that its log does not hold yet (a resumed run
    told them before); return how many of the log's trials are baselines: the first trial's number."""
    told = {trial["info"]["arm"] for trial in optimizer.trials}
    for name, arm in arms.items():
        if name not in told and on_the_simplex(baselines[name], optimizer.names):
            tell(optimizer, arm, options)
    return sum(trial["info"]["arm"] in baselines for trial in optimizer.trials)


if __name__ == "__main__":
    main()
