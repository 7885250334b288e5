"""python run.py: explainable dense reward shaping for RLHF, end to end (Koo et al. 2025).

    outer:  w* = argmax_w  J(pi_w)                     bayes_opt.py  (GP + expected improvement)
    inner:  pi_w = PPO on  r'_t(w) = sum_k w_k c^k_t   ppo.py, shaping.py, reward_attribution.py

Every arm is a full PPO run from the same SFT reference with the same budget:
  1. baselines  sparse RLHF, uniform, ABC (attention, beta = 0.8, Chan et al. 2024), SHAP only,
                LIME only, RCfD (sparse, R = -(f(x,y) - f(x,y_demo))^2, KL 0, Rita et al. 2024)
  2. BO trials  weights over (sparse, attention, SHAP, LIME); J (`objective`) = mean over the
                held-out evaluations of (reward - kl_coef * KL to the reference), the
                KL-regularised reward PPO itself maximises; the baselines that are points of
                this simplex are told to the BO first
  3. confirm    the best weights and sparse again, at fresh seeds
  4. report     reward against KL (the frontier), at matched KL, with 95% intervals over seeds

This file wires the stages together, top to bottom: J, what every arm shares, the reward of
one batch, the inner loop (`train_arm`), the outer loop (`experiment`), then `main`. The
credit methods and baselines are registered in credit.py, the held-out measurement is in
evaluation.py, the options in cli.py (checked whole in checks.py). Finished arms and trials
are kept in the output folder (outputs.py), so an interrupted run picks up where it stopped.
"""

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import cli
from cli import Options, fail, locked

if __name__ == "__main__":  # --help and a bad option answer before the heavy imports,
    # and the CPU numerics are set before torch loads
    cli.pin_numerics(cli.option_parser().parse_args().numerics)

import numpy as np
import torch
from tqdm.auto import tqdm

import bayes_opt
import checks
import coalitions
import credit
import evaluation
import outputs
import parallel
import ppo
import report
import reward_attribution
import scoring
import shaping
import task
from credit import ON_THE_RM, Baseline, Training
from report import Arm

TRIAL_SEED_OFFSET = 100  # trial k: seed + 100 + k, apart from the confirmations'


def objective(arm: Arm, kind: str = "regularised") -> float:
    """J(w), what the outer loop maximises, from the held-out curve of the arm that
    trained with w, over its E evaluations after the start (e = 0 is the SFT policy):

        regularised  J = 1/E sum_{e=1..E} (reward_e - kl_coef KL_e)   (the default)
        auc          J = 1/E sum_{e=1..E} reward_e                     (--objective auc)

    reward_e: the mean RM score of sampled held-out responses; KL_e: their mean
    sequence KL to the reference (k1); kl_coef: the run's --kl-coef. The regularised
    J is the KL-regularised reward PPO itself maximises, so drifting from the reference
    alone cannot raise it; the mean over the curve keeps "good, and fast" in it.
    """
    kl_coef = arm.kl_coef if kind == "regularised" else 0.0
    gains = [point["reward"] - kl_coef * point["kl"] for point in arm.curve[1:]]
    return float(np.mean(gains))


# ---------------------------------------------------------------------------------------
# What every arm shares
# ---------------------------------------------------------------------------------------
@dataclass
class Setup:
    """The task, the reward function and the stage configurations every arm shares."""

    task: task.Task
    """policy and RM with their tokenizers, prompts, demonstrations"""
    reward_fn: Callable[[list[str], list[str]], torch.Tensor]
    """(prompts, responses) -> RM scores f(x, y) (N,)"""
    rcfd_reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None
    """(prompts, responses) -> R_cfd (N,); None if a prompt has no demonstration"""
    attribution: reward_attribution.AttributionConfig
    """how SHAP, LIME and attention explain the RM"""
    ppo_config: ppo.PPOConfig
    """PPO settings shared by every arm (each arm sets its own seed)"""
    token_reward: coalitions.TokenReward | None = None
    """f over the RM's token ids where the RM reads the policy's tokens (the embedded
    task): SHAP and LIME build coalitions as ids; None: they score texts"""

    @property
    def tokenizer(self):
        return self.task.policy_tokenizer


def build_setup(options: Options) -> Setup:
    """Load (or build) the task and wrap its RM as the reward function."""
    where = ("cache_dir", "policy", "reward_model", "prompts")
    located = {name: getattr(options, name) for name in where}
    sized = None  # the sized reviews' lengths follow the response lengths
    if options.reviews == "sized":
        sized = (options.min_new_tokens, options.max_new_tokens)
    processes = min(2, options.workers)  # the embedded task's two models train side by side
    the_task = task.build_task(task.TaskConfig(**located, response_tokens=sized, build_processes=processes))
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = auto if options.device == "auto" else options.device
    the_task.reward_model.to(device)
    scorer = scoring.sdpa_view(the_task.reward_model)  # every score: the SDPA kernel
    reward_tokenizer = the_task.reward_tokenizer

    def reward_fn(prompts, responses):
        return scoring.score(scorer, reward_tokenizer, prompts, responses)

    def score_ids(input_ids, attention_mask):
        return scoring.score_ids(scorer, input_ids, attention_mask)

    demos = the_task.demonstrations
    has_demos = all(demos.get(p) is not None for p in the_task.train_prompts)
    rcfd_reward_fn = shaping.rcfd_reward_fn(reward_fn, demos) if has_demos else None
    mask_string = None if the_task.embedded else reward_tokenizer.mask_token
    token_reward = None  # the embedded task's policy and RM share a word-level tokenizer
    if the_task.embedded:
        limit = scorer.config.max_position_embeddings
        token_reward = coalitions.TokenReward(reward_tokenizer, score_ids, limit)
    attribution = reward_attribution.AttributionConfig(
        mask_string or reward_tokenizer.unk_token,
        shap_backend=options.shap_backend,
        shap_permutations=options.shap_permutations,
        lime_backend=options.lime_backend,
        lime_samples=options.lime_samples,
        seed=options.seed,
    )
    return Setup(the_task, reward_fn, rcfd_reward_fn, attribution, checks.ppo_config(options), token_reward)


# ---------------------------------------------------------------------------------------
# The reward of one batch: score -> explanations -> credit components c^k
# ---------------------------------------------------------------------------------------
def reward_components(setup: Setup, prompt_ids, response_ids, response_mask, methods, reward="rm"):
    """Credit components c^k, each (B, T) summing to R, for the credit `methods`;
    and f(x, y) (B,).

    R is f(x, y) (reward 'rm'), or the RCfD score -(f(x, y) - f(x, y_demo))^2
    (reward 'rcfd'), which SHAP and LIME then explain.
    """
    prompts, pieces = coalitions.response_texts(setup.tokenizer, prompt_ids, response_ids, response_mask)
    responses = ["".join(row) for row in pieces]
    scores = setup.reward_fn(prompts, responses)  # (B,) f(x, y)
    explained_fn = setup.token_reward or setup.reward_fn  # coalitions -> R
    sequence_reward = scores  # (B,) R
    if reward == "rcfd":
        explained_fn = setup.rcfd_reward_fn
        sequence_reward = explained_fn(prompts, responses)
    batch = credit.Responses(prompts, pieces, response_ids, response_mask, explained_fn)
    methods = {name: credit.CREDIT_METHODS[name] for name in methods}
    attributions = {n: m.attribute(setup, batch) for n, m in methods.items()}  # (B, T)
    components = shaping.credit_components(sequence_reward, response_mask, attributions, credit.shares())
    return components, scores


# ---------------------------------------------------------------------------------------
# The inner loop: one PPO run from the SFT reference
# ---------------------------------------------------------------------------------------
def train_arm(arm: Arm, training: Training, setup: Setup, options: Options) -> Arm:
    """Train a fresh policy on the shaped reward r'_t(w); fill in (and keep) the
    arm's held-out curve and samples.

        r'_t(w) = sum_k w_k c^k_t     shaping.shape; c^k spread R (training.reward)
        PPO on r'_t - kl_coef KL_t    ppo.py; kl_coef 0 without training.kl_penalty
    """
    config = replace(setup.ppo_config, seed=arm.seed)
    if not training.kl_penalty:
        config = replace(config, kl_coef=0.0, target_kl=None)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    policy = copy.deepcopy(setup.task.policy)
    reference = setup.task.policy
    trainer = ppo.PPOTrainer(policy, config, pad, eos, ref_policy=reference)
    rng = np.random.default_rng(arm.seed)
    weighted = [m for m in credit.CREDIT_METHODS if arm.weights.get(m, 0) > 0]
    logs = os.path.join(options.out, "tensorboard", arm.name)
    scalars = report.Scalars(logs, on=options.tensorboard)
    prompts = options.batch_size // config.group_size  # each answered G times
    train_kl, start = 0.0, time.time()
    steps = range(options.iterations + 1)
    for iteration in tqdm(steps, desc=arm.name, leave=False, disable=None):
        last = iteration == options.iterations
        if iteration % options.eval_every == 0 or last:
            held_out = evaluation.evaluate(trainer, setup, options.eval_prompts)
            point = {"iteration": iteration, **held_out, "train_kl": train_kl}
            if not all(math.isfinite(v) for v in point.values()):
                where = f"arm {arm.name}, iteration {iteration}"
                raise RuntimeError(f"{where}: a non-finite evaluation {point}")
            arm.curve.append(point)
            scalars.add("eval", held_out, iteration)
        if last:
            break
        # Rollout, the reward of the batch, one PPO update.
        rows = rng.choice(len(setup.task.train_prompts), prompts, replace=False)
        texts = [setup.task.train_prompts[i] for i in rows]
        enc = setup.tokenizer(texts, return_tensors="pt", padding=True)
        rollout = trainer.rollout(enc["input_ids"], enc["attention_mask"])
        prompt_ids = rollout.prompt_ids.cpu()  # (B, P)
        response_ids = rollout.response_ids.cpu()  # (B, T)
        response_mask = rollout.response_mask.cpu()  # (B, T)
        components, scores = reward_components(
            setup, prompt_ids, response_ids, response_mask, weighted, training.reward
        )
        token_rewards = shaping.shape(components, arm.weights)  # (B, T) r'_t(w)
        stats = trainer.update(rollout, token_rewards, scores)
        stats["reward"] = stats.pop("score")
        scalars.add("train", stats, iteration + 1)
        train_kl = stats["kl"]
    arm.seconds = time.time() - start
    scalars.close()
    arm.samples = evaluation.samples(setup, trainer.policy, config, options.seed)
    if outputs.saves_policy(arm, options):
        path = outputs.policy_path(options, arm.name)
        report.save_policy(path, trainer.policy, setup.tokenizer, config)
    report.write_json(outputs.arm_path(options, arm.name), arm.to_json())
    return arm


# ---------------------------------------------------------------------------------------
# The outer loop, with the baselines before it and the confirmation after it
# ---------------------------------------------------------------------------------------
def experiment(setup: Setup, options: Options) -> dict:
    """Baselines, the BO loop, confirmation and report.

    workers.train(train_arm, batch) calls train_arm(arm, training, setup, options)
    for each (arm, training) of the batch, here or in worker processes
    (parallel.py), and returns the arms in the batch's order. An arm an interrupted
    run finished (same weights and seed) is read back instead (outputs.finished_arm).
    """
    kl_coef = options.kl_coef
    finished = outputs.finished_arm
    with parallel.workers(options, setup, build_setup, finished) as workers:
        # 1. Baselines: each a full PPO run from the SFT reference, the same budget.
        baselines = chosen_baselines(setup, options)
        batch = [
            (Arm(name, "baseline", name, b.weights, options.seed, kl_coef), b.training)
            for name, b in baselines.items()
        ]
        arms = {arm.name: arm for arm in workers.train(train_arm, batch)}

        # 2. Bayesian optimisation: ask w -> train a policy on r'(w) -> tell J(w).
        components = options.components.split(",")
        log = os.path.join(options.out, "trials.jsonl")
        optimizer = bayes_opt.BayesOpt(components, log, options.seed)
        # The baselines on the simplex: free observations of J (the same budget).
        first = tell_baselines(optimizer, arms, baselines, options)
        arms |= outputs.finished_trials(optimizer, first, options)  # a resumed run's
        while (k := len(optimizer.trials) - first) < options.trials:
            asked = optimizer.ask(min(options.bo_batch, options.trials - k))
            batch = []
            for j, weights in enumerate(asked):  # J is noisy over seeds: one each
                seed = options.seed + TRIAL_SEED_OFFSET + k + j
                name = f"trial-{first + k + j}"  # its line in trials.jsonl
                arm = Arm(name, "trial", "trial", weights, seed, kl_coef)
                batch.append((arm, ON_THE_RM))
            for arm in workers.train(train_arm, batch):  # told in the order asked
                arms[arm.name] = arm
                tell(optimizer, arm, options)
        best_weights, _ = optimizer.best()

        # 3. Confirm: the best weights and sparse again, at fresh seeds.
        first_seed = options.seed + 1
        seeds = range(first_seed, first_seed + options.confirm_seeds)
        sparse = credit.BASELINES["sparse"].weights
        groups = [("bo-best", best_weights), ("sparse", sparse)]
        batch = [
            (Arm(f"{g}-seed{s}", "confirm", g, w, s, kl_coef), ON_THE_RM) for s in seeds for g, w in groups
        ]
        arms |= {arm.name: arm for arm in workers.train(train_arm, batch)}

    # 4. Report: tables, curves, the frontier, the credit each method gives each token.
    own = {n for n, b in baselines.items() if b.training.reward != "rm"}  # R_cfd's
    shown = {n: arm.weights for n, arm in arms.items() if n not in own}
    tokens = credit_examples(setup, options, shown | {"bo-best": best_weights})
    sft = setup.task.policy  # what the arms start from
    reference = evaluation.samples(setup, sft, setup.ppo_config, options.seed)
    saved = [
        outputs.policy_path(options, name) for name, arm in arms.items() if outputs.saves_policy(arm, options)
    ]
    summary = report.write_all(
        options.out, arms, best_weights, tokens, reference, objective, saved, options.quick
    )
    print(summary)
    files = "summary.md, samples.md, tokens.html, curves.csv/png, frontier.png"
    print(f"results in {options.out}: {files}")
    return {"arms": arms, "best_weights": best_weights}


def chosen_baselines(setup: Setup, options: Options) -> dict[str, Baseline]:
    """named_baselines, less those whose reward this task cannot give (RCfD without
    demonstrations)."""
    baselines = checks.named_baselines(options)
    for name, baseline in list(baselines.items()):
        if baseline.training.reward == "rcfd" and setup.rcfd_reward_fn is None:
            print(f"{name} skipped: RCfD needs a demonstration for every training prompt")
            del baselines[name]
    return baselines


def tell(optimizer: bayes_opt.BayesOpt, arm: Arm, options: Options) -> None:
    """Tell the BO J(w) of one finished arm (--objective); the log keeps both J."""
    regularised = objective(arm, "regularised")
    auc = objective(arm, "auc")
    info = dict(arm=arm.name, regularised=regularised, auc=auc, final=arm.final, kl=arm.final_kl)
    weights = {c: arm.weights.get(c, 0.0) for c in optimizer.names}
    optimizer.tell(weights, info[options.objective], info=info)


def tell_baselines(optimizer, arms: dict, baselines: dict, options) -> int:
    """Tell the BO the J of each baseline on its simplex that its log does not hold
    yet (a resumed run told them before); return how many of the log's trials are
    baselines: the first trial's number."""
    told = {trial["info"]["arm"] for trial in optimizer.trials}
    for name, arm in arms.items():
        on_it = credit.on_the_simplex(baselines[name], optimizer.names)
        if name not in told and on_it:
            tell(optimizer, arm, options)
    return sum(trial["info"]["arm"] in baselines for trial in optimizer.trials)


def credit_examples(setup: Setup, options: Options, arm_weights: dict) -> dict:
    """The credit r'_t each arm's weights give the tokens of SFT responses to
    held-out prompts, and its fidelity to the task's truths (evaluation.py)."""
    prompts = setup.task.val_prompts[: options.eval_prompts]
    sft = setup.task.policy
    drawn = evaluation.draw(setup, sft, prompts, setup.ppo_config, options.seed)
    embedded = setup.task.embedded
    methods = [n for n, m in credit.CREDIT_METHODS.items() if embedded or not m.oracle]
    components, _ = reward_components(
        setup, drawn.prompt_ids, drawn.response_ids, drawn.response_mask, methods
    )
    shaped = {n: shaping.shape(components, w) for n, w in arm_weights.items()}
    return evaluation.credit_table(setup, drawn, shaped)  # (B, T) each


# ---------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    options = checks.parse_options(argv)
    if not cli.numerics_in_force(options.numerics):
        fail(f"--numerics {options.numerics}: torch loaded before its settings; run run.py as a script")
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    print(f"building the task (embedded: 2 to 3 minutes the first time, cached in {options.cache_dir})")
    try:
        setup = build_setup(options)
    except ValueError as error:  # a model or prompts file that cannot load: one line
        fail(str(error))
    prompts = len(setup.task.train_prompts)
    if options.batch_size // options.group_size > prompts:
        sizes = f"--batch-size {options.batch_size} / --group-size {options.group_size}"
        fail(f"{sizes}: over {prompts} prompts")
    if too_long := task.position_error(setup.task, options.max_new_tokens):
        fail(too_long)  # before the folder is claimed
    with locked(options.out):
        outputs.claim_output_folder(options)  # only once the models and prompts loaded
        return experiment(setup, options)


if __name__ == "__main__":
    main()
