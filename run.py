"""python run.py: explainable dense reward shaping for RLHF, end to end (Koo et al. 2025).

    outer:  w* = argmax_w  J(pi_w)                 bayes_opt.py  (GP + expected improvement)
    inner:  pi_w = PPO on  r'_t(w) = sum_k w_k c^k_t   ppo.py, shaping.py, reward_attribution.py

Every arm is a full PPO run from the same SFT reference with the same budget:
  baselines  sparse RLHF, uniform, ABC (attention, beta = 0.8, Chan et al. 2024), SHAP only,
             LIME only, RCfD (sparse, R = -(f(x,y) - f(x,y_demo))^2, KL 0, Rita et al. 2024)
  BO trials  weights over (sparse, attention, SHAP, LIME); J = mean held-out reward over the
             evaluation points of training (area under the learning curve); the baselines
             that are points of this simplex are told to the BO first, as free observations
  confirm    the best weights and sparse again, at fresh seeds

This is the only file that wires the stages together. Finished arms and trials are kept in
the output folder, so an interrupted run picks up where it stopped.
"""

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch
from tqdm.auto import tqdm

import bayes_opt
import ppo
import report
import reward_attribution
import shaping
import task


def option(default, description: str):
    return field(default=default, metadata={"help": description})


@dataclass
class Options:
    seed: int = option(0, "seed of everything: sampling, PPO, BO (the task keeps its own seed)")
    out: str = option("runs/default", "output folder; rerun with the same folder to resume")
    trials: int = option(6, "Bayesian-optimisation trials (each one a full PPO run)")
    iterations: int = option(30, "PPO iterations per run")
    batch_size: int = option(64, "responses per PPO iteration")
    min_new_tokens: int = option(4, "shortest response (EOS blocked before)")
    max_new_tokens: int = option(16, "longest response")
    learning_rate: float = option(2e-4, "AdamW learning rate of the policy and its value head")
    kl_coef: float = option(0.05, "per-token KL penalty coefficient (RCfD uses 0)")
    eval_every: int = option(2, "PPO iterations between two held-out evaluations")
    eval_prompts: int = option(64, "held-out prompts per evaluation")
    components: str = option("sparse,attention,shap,lime", "credit components whose weights BO searches")
    baselines: str = option("sparse,uniform,abc,shap,lime,rcfd", "baseline arms to run")
    confirm_seeds: int = option(3, "fresh seeds re-running the best weights and sparse")
    lime_samples: int = option(128, "LIME perturbations per response (fidelity flattens out by ~128)")
    weights: str | None = option(None, "JSON file of extra fixed weights, run as the arm 'custom'")
    policy: str | None = option(None, "policy: hub name or local path (default: the embedded task)")
    reward_model: str | None = option(None, "reward model: hub name or local path (default: embedded)")
    prompts: str | None = option(None, "prompts file, one per line, `prompt<TAB>demonstration` optional")
    cache_dir: str = option(".cache/task", "where the embedded task's models are cached")
    device: str = option("auto", "auto, cpu or cuda")
    threads: int = option(
        min(2, os.cpu_count() or 1),
        "CPU threads for torch (on 2 cores, 2 threads train an arm a quarter faster than 1)",
    )
    quick: bool = option(False, "smoke run in runs/quick: 4 iterations, 2 trials, batch 16, one confirm seed")


BASELINES = {  # arm -> credit weights; RCfD also swaps the reward (see train_arm)
    "sparse": {"sparse": 1.0},
    "uniform": {"uniform": 1.0},
    "abc": {"attention": 0.8, "sparse": 0.2},
    "shap": {"shap": 1.0},
    "lime": {"lime": 1.0},
    "rcfd": {"sparse": 1.0},
}
TRIAL_SEED_OFFSET = 100  # trial k trains with seed + 100 + k, apart from the confirmation seeds
QUICK = dict(iterations=4, trials=2, batch_size=16, eval_every=2, eval_prompts=16, confirm_seeds=1)


def parse_options(argv=None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for f in fields(Options):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {int: int, float: float}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=f.default, help=f.metadata["help"])
    options = Options(**vars(parser.parse_args(argv)))
    if options.quick:  # its own folder by default, so that a full run afterwards does not clash
        options = replace(options, **QUICK, out="runs/quick" if options.out == Options.out else options.out)
    for name in options.components.split(","):
        if name not in shaping.COMPONENTS:
            parser.error(
                f"unknown credit component {name!r} in --components; expected some of {shaping.COMPONENTS}"
            )
    for name in options.baselines.split(","):
        if name and name not in BASELINES:
            parser.error(f"unknown baseline {name!r} in --baselines; expected some of {tuple(BASELINES)}")
    for path, what in [(options.prompts, "--prompts"), (options.weights, "--weights")]:
        if path is not None and not os.path.isfile(path):
            parser.error(f"{what} file {path!r} does not exist")
    if options.weights is not None:
        try:
            shaping.check_weights(read_json(options.weights))
        except (ValueError, AttributeError) as error:
            parser.error(f"--weights file {options.weights!r}: {error}")
    return options


def claim_output_folder(options) -> None:
    """Write config.json, or exit if the folder holds finished arms trained with other options."""
    config_path = os.path.join(options.out, "config.json")
    if os.path.exists(config_path):
        before = read_json(config_path)
        changed = {
            k: (before.get(k), v)
            for k, v in asdict(options).items()
            if k
            in (
                "iterations",
                "batch_size",
                "seed",
                "learning_rate",
                "kl_coef",
                "eval_every",
                "eval_prompts",
                "lime_samples",
                "policy",
                "reward_model",
                "prompts",
                "max_new_tokens",
                "min_new_tokens",
            )
            and before.get(k) != v
        }
        if changed:
            sys.exit(
                f"run.py: error: {options.out!r} holds a run with other options {changed} "
                "(old, new); pick another --out"
            )
    write_json(config_path, asdict(options))


def write_json(path: str, payload) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written result."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as file:
        json.dump(payload, file, indent=1)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------
# The reward: score -> explanations -> per-token shaped reward
# ---------------------------------------------------------------------------------------
def reward_components(setup, prompt_ids, response_ids, response_mask, methods, demo_scores=None):
    """Credit components c^k (each (B, T), summing to R) for the explanations in `methods`, and f(x, y) (B,).

    R is the RM score, or the RCfD score -(f(x, y) - f(x, y_demo))^2 when `demo_scores` are given.
    """
    prompts, pieces = reward_attribution.response_texts(
        setup.tokenizer, prompt_ids, response_ids, response_mask
    )
    scores = setup.reward_fn(prompts, ["".join(p) for p in pieces])  # (B,)
    sequence_reward = scores if demo_scores is None else shaping.rcfd_scores(scores, demo_scores)
    attributions = {
        method: reward_attribution.attribute(
            method,
            setup.tokenizer,
            prompt_ids,
            response_ids,
            response_mask,
            setup.reward_fn,
            setup.attribution,
            setup.task.reward_model,
            setup.task.reward_tokenizer,
        )[0]
        for method in methods
    }
    return shaping.credit_components(sequence_reward, response_mask, attributions), scores


def evaluate(trainer, setup, options) -> float:
    """Mean RM score of sampled responses to the first `eval_prompts` held-out prompts."""
    prompts = setup.task.val_prompts[: options.eval_prompts]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    response_ids, response_mask = trainer.generate(enc["input_ids"], enc["attention_mask"])
    _, pieces = reward_attribution.response_texts(
        setup.tokenizer, enc["input_ids"], response_ids, response_mask
    )
    return setup.reward_fn(prompts, ["".join(p) for p in pieces]).mean().item()


# ---------------------------------------------------------------------------------------
# The inner loop: one PPO run from the SFT reference
# ---------------------------------------------------------------------------------------
def arm_path(options, name: str) -> str:
    return os.path.join(options.out, "arms", f"{name}.json")


def read_json(path: str):
    with open(path) as file:
        return json.load(file)


def train_arm(name: str, weights: dict, seed: int, setup, options, rcfd: bool = False) -> dict:
    """Train a fresh policy with the shaped reward; return (and keep) its learning curve."""
    path = arm_path(options, name)
    if os.path.exists(path):
        finished = read_json(path)
        if finished["weights"] == weights and finished["seed"] == seed:
            return finished
    config = replace(setup.ppo_config, seed=seed, kl_coef=0.0 if rcfd else options.kl_coef)
    trainer = ppo.PPOTrainer(
        copy.deepcopy(setup.task.policy),
        config,
        setup.tokenizer.pad_token_id,
        setup.tokenizer.eos_token_id,
        ref_policy=setup.task.policy,
    )
    rng = np.random.default_rng(seed)
    curve, stats, start = [], {"kl": 0.0}, time.time()
    for iteration in tqdm(range(options.iterations + 1), desc=name, leave=False):
        if iteration % options.eval_every == 0 or iteration == options.iterations:
            curve.append(
                {"iteration": iteration, "reward": evaluate(trainer, setup, options), "kl": stats["kl"]}
            )
        if iteration == options.iterations:
            break
        rows = rng.choice(len(setup.task.train_prompts), options.batch_size, replace=False)
        enc = setup.tokenizer([setup.task.train_prompts[i] for i in rows], return_tensors="pt", padding=True)
        rollout = trainer.rollout(enc["input_ids"], enc["attention_mask"])
        components, scores = reward_components(  # only the explanations with a weight: they cost RM rows
            setup,
            enc["input_ids"],
            rollout.response_ids.cpu(),
            rollout.response_mask.cpu(),
            [m for m in shaping.ATTRIBUTIONS if weights.get(m, 0) > 0],
            setup.demo_scores[rows] if rcfd else None,
        )
        stats = trainer.update(rollout, shaping.shape(components, weights), scores)
    rewards = [point["reward"] for point in curve]
    result = {
        "arm": name,
        "weights": weights,
        "seed": seed,
        "curve": curve,
        "auc": float(np.mean(rewards[1:])),
        "final": float(np.mean(rewards[-2:])),
        "kl": stats["kl"],
        "seconds": time.time() - start,
    }
    write_json(path, result)
    return result


def credit_examples(setup, options, arm_weights: dict) -> dict:
    """The credit each arm's weights give the tokens of SFT responses to held-out prompts.

    Fidelity = Pearson correlation of r'_t with the ground-truth credit over all real tokens
    (embedded task only; None elsewhere).
    """
    enc = setup.tokenizer(setup.task.val_prompts[: options.eval_prompts], return_tensors="pt", padding=True)
    device = next(setup.task.policy.parameters()).device  # on a GPU once a PPO run used it as its reference
    response_ids, response_mask = (
        tensor.cpu()
        for tensor in ppo.sample(
            setup.task.policy,
            enc["input_ids"].to(device),
            enc["attention_mask"].to(device),
            setup.ppo_config,
            setup.tokenizer.pad_token_id,
            setup.tokenizer.eos_token_id,
            generator=torch.Generator(device).manual_seed(options.seed),
        )
    )
    components, _ = reward_components(
        setup, enc["input_ids"], response_ids, response_mask, shaping.ATTRIBUTIONS
    )
    credit = {
        name: shaping.shape(components, weights) for name, weights in arm_weights.items()
    }  # (B, T) each
    tokens = [
        setup.tokenizer.convert_ids_to_tokens(row[: int(n)])
        for row, n in zip(response_ids, response_mask.sum(1))
    ]
    real = response_mask.bool()
    truth, fidelity = None, {name: None for name in credit}
    if setup.task.embedded:
        prompts = setup.task.val_prompts[: options.eval_prompts]
        truth = torch.zeros_like(response_mask, dtype=torch.float32)
        for i, (prompt, words) in enumerate(zip(prompts, tokens)):
            truth[i, : len(words)] = torch.tensor(task.true_token_credit(prompt, words))
        fidelity = {
            name: float(np.corrcoef(values[real], truth[real])[0, 1]) for name, values in credit.items()
        }
    return {
        "prompts": setup.task.val_prompts[: options.eval_prompts],
        "tokens": tokens,
        "fidelity": fidelity,
        "credit": {name: values.tolist() for name, values in credit.items()},
        "truth": None if truth is None else truth.tolist(),
    }


def build_setup(options):
    """The task, the reward function and the fixed stage configurations, shared by every arm."""
    the_task = task.build_task(
        task.TaskConfig(
            cache_dir=options.cache_dir,
            policy=options.policy,
            reward_model=options.reward_model,
            prompts=options.prompts,
        )
    )
    device = (
        "cuda"
        if options.device == "auto" and torch.cuda.is_available()
        else ("cpu" if options.device == "auto" else options.device)
    )
    the_task.reward_model.to(device)

    def reward_fn(prompts, responses):
        return task.score(the_task.reward_model, the_task.reward_tokenizer, prompts, responses)

    demos = [the_task.demonstrations.get(p) for p in the_task.train_prompts]
    demo_scores = reward_fn(the_task.train_prompts, demos) if None not in demos else None
    mask_string = (
        the_task.reward_tokenizer.unk_token
        if the_task.embedded
        else (the_task.reward_tokenizer.mask_token or the_task.reward_tokenizer.unk_token)
    )
    return argparse.Namespace(
        task=the_task,
        tokenizer=the_task.policy_tokenizer,
        reward_fn=reward_fn,
        demo_scores=demo_scores,
        attribution=reward_attribution.AttributionConfig(
            mask_string=mask_string, lime_samples=options.lime_samples, seed=options.seed
        ),
        ppo_config=ppo.PPOConfig(
            batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            min_new_tokens=options.min_new_tokens,
            max_new_tokens=options.max_new_tokens,
            device=options.device,
        ),
    )


# ---------------------------------------------------------------------------------------
# The outer loop, with the baselines before it and the confirmation after it
# ---------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    options = parse_options(argv)
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    claim_output_folder(options)
    setup = build_setup(options)

    # 1. Baselines: each a full PPO run from the SFT reference with the same budget.
    arms = {}
    baselines = {name: BASELINES[name] for name in options.baselines.split(",") if name}
    if "rcfd" in baselines and setup.demo_scores is None:
        print("RCfD skipped: not every training prompt has a demonstration")
        del baselines["rcfd"]
    if options.weights is not None:
        baselines["custom"] = read_json(options.weights)
    for name, weights in tqdm(baselines.items(), desc="baselines"):
        arms[name] = train_arm(name, weights, options.seed, setup, options, rcfd=name == "rcfd")

    # 2. Bayesian optimisation of the weights: ask -> train a fresh policy -> tell J(w).
    #    Baselines that are points of the same simplex (sparse, ABC, SHAP, LIME) were trained
    #    with the same seed and budget: they are told first, as free observations of J.
    components = options.components.split(",")
    optimizer = bayes_opt.BayesOpt(
        components, log_path=os.path.join(options.out, "trials.jsonl"), seed=options.seed
    )
    told = {trial["info"].get("arm") for trial in optimizer.trials}
    for name, weights in baselines.items():
        if name != "rcfd" and name not in told and set(weights) <= set(components):
            optimizer.tell(
                {c: weights.get(c, 0.0) for c in components},
                arms[name]["auc"],
                info={"arm": name, "final": arms[name]["final"], "kl": arms[name]["kl"]},
            )
    n_seeded = sum(trial["info"].get("arm") in baselines for trial in optimizer.trials)
    with tqdm(total=options.trials, initial=len(optimizer.trials) - n_seeded, desc="BO trials") as bar:
        while len(optimizer.trials) < n_seeded + options.trials:
            weights, trial = optimizer.ask(), len(optimizer.trials) - n_seeded
            # A seed of its own per trial: J(w) is noisy over seeds, which is what the GP
            # models; asking a point again then measures it again instead of replaying it.
            arm = train_arm(
                f"trial-{trial}", weights, options.seed + TRIAL_SEED_OFFSET + trial, setup, options
            )
            optimizer.tell(
                weights, arm["auc"], info={"arm": arm["arm"], "final": arm["final"], "kl": arm["kl"]}
            )
            bar.update()
    for trial in optimizer.trials:  # trials finished before a resume are read back from their files
        name = trial["info"]["arm"]
        arms[name] = arms.get(name) or read_json(arm_path(options, name))
    best_weights, _ = optimizer.best()

    # 3. Confirm: the best weights and sparse again, at fresh seeds.
    for k in tqdm(range(1, options.confirm_seeds + 1), desc="confirm"):
        for name, weights in [("bo-best", best_weights), ("sparse", BASELINES["sparse"])]:
            arm = train_arm(f"{name}-seed{options.seed + k}", weights, options.seed + k, setup, options)
            arms[arm["arm"]] = arm

    # 4. Report: tables, curves and the credit every method gives each token.
    arm_weights = {
        name: arm["weights"] for name, arm in arms.items() if name != "rcfd"
    }  # RCfD explains R_cfd
    credit = credit_examples(setup, options, {**arm_weights, "bo-best": best_weights})
    summary = report.write_all(options.out, arms, best_weights, credit)
    print(summary)
    return {"arms": arms, "best_weights": best_weights}


if __name__ == "__main__":
    main()
