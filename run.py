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
import glob
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import cli
import numerics
from cli import EXPERIMENT_OPTIONS, Options, fail, locked, parse

if __name__ == "__main__":  # --help and a malformed option answer before seconds of imports, and the
    cli.pin_numerics(cli.option_parser().parse_args().numerics)  # CPU numerics are set before torch loads

import numpy as np
import torch
from tqdm.auto import tqdm

import bayes_opt
import parallel
import ppo
import report
import reward_attribution
import scoring
import shaping
import task
from report import Arm

BASELINES = {  # arm -> credit weights; RCfD also swaps the reward (see train_arm)
    "sparse": {"sparse": 1.0}, "uniform": {"uniform": 1.0}, "abc": {"attention": 0.8, "sparse": 0.2},
    "shap": {"shap": 1.0}, "lime": {"lime": 1.0}, "rcfd": {"sparse": 1.0},
    "true_shapley": {"true_shapley": 1.0}, "lexicon": {"lexicon": 1.0},  # oracles: the embedded task's truths
}  # fmt: skip
SHARED_WITH_PPO = ("learning_rate", "min_new_tokens", "max_new_tokens", "kl_coef", "target_kl", "kl_horizon",
                   "device")  # fmt: skip
TRIAL_SEED_OFFSET = 100  # trial k trains with seed + 100 + k, apart from the confirmation seeds
SAMPLE_PROMPTS = 6  # held-out prompts of samples.md


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
            shap_permutations=options.shap_permutations,
            lime_samples=options.lime_samples,
            seed=options.seed,
        ),
        ppo_config=ppo.PPOConfig(**{name: getattr(options, name) for name in SHARED_WITH_PPO}),
        token_reward=token_reward,
    )


# ---------------------------------------------------------------------------------------
# The reward: score -> explanations -> per-token shaped reward
# ---------------------------------------------------------------------------------------
def reward_components(setup: Setup, prompt_ids, response_ids, response_mask, methods, rcfd=False):
    """Credit components c^k (each (B, T), summing to R) for the explanations in `methods`, and f(x, y) (B,).

    R is f(x, y), or with `rcfd` the RCfD score -(f(x, y) - f(x, y_demo))^2, which SHAP and LIME explain.
    """
    prompts, pieces = reward_attribution.response_texts(
        setup.tokenizer, prompt_ids, response_ids, response_mask
    )
    responses = ["".join(row) for row in pieces]
    scores = setup.reward_fn(prompts, responses)  # (B,)
    explained_fn = setup.rcfd_reward_fn if rcfd else setup.token_reward or setup.reward_fn  # coalitions -> R
    sequence_reward = explained_fn(prompts, responses) if rcfd else scores  # (B,)
    attributions = {}
    for method in methods:
        if method in shaping.TRUTHS:  # no explainer: the credit of the game the RM was trained on
            attributions[method] = task.true_credit(setup.task, method, prompts, response_ids, response_mask)
            continue
        values, _ = reward_attribution.attribute_texts(
            method, prompts, pieces, explained_fn, setup.attribution,
            setup.task.reward_model, setup.task.reward_tokenizer,
        )  # fmt: skip
        width = response_mask.shape[1] - values.shape[1]  # responses shorter than the batch's T
        attributions[method] = torch.nn.functional.pad(values, (0, width))  # (B, T)
    return shaping.credit_components(sequence_reward, response_mask, attributions), scores


@torch.no_grad()
def evaluate(trainer: ppo.PPOTrainer, setup: Setup, options: Options) -> dict[str, float]:
    """Held-out reward and KL on the first `eval_prompts` held-out prompts.

    reward: mean RM score of sampled responses. KL: mean sequence KL of the same responses to
    the reference, estimated under the sampling distribution (Schulman 2020):
        k1 = sum_t log(pi / pi_ref),    k3 = sum_t (rho - 1) - log(rho),  rho = pi_ref / pi.
    """
    prompts = setup.task.val_prompts[: options.eval_prompts]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    responses = trainer.generate(enc["input_ids"], enc["attention_mask"])
    tokens = (enc["input_ids"], enc["attention_mask"], *responses)
    _, scores, kl, k3 = scored(setup, trainer.policy, trainer.ref_policy, trainer.config, prompts, tokens)
    return {"reward": scores.mean().item(), "kl": kl.mean().item(), "kl_k3": k3.mean().item()}


@torch.no_grad()
def scored(setup: Setup, policy, ref_policy, config: ppo.PPOConfig, prompts: list[str], tokens: tuple):
    """Responses (tokens: CPU prompt_ids, prompt_mask, response_ids, response_mask) as texts, with their
    RM scores f(x, y) (B,) and their sequence KL to the reference, k1 and k3 (B,)."""
    _, pieces = reward_attribution.response_texts(setup.tokenizer, tokens[0], *tokens[2:])
    responses = ["".join(p) for p in pieces]
    batch = [t.to(next(policy.parameters()).device) for t in tokens]
    drawn_as = ppo.drawn_as(config, setup.tokenizer.eos_token_id)
    logprobs, _, _ = ppo.response_logprobs(policy, *batch, **drawn_as)  # (B, T)
    ref_logprobs, _, _ = ppo.response_logprobs(ref_policy, *batch, **drawn_as)
    log_ratio = (logprobs - ref_logprobs) * batch[3]  # (B, T), zero outside the response
    k3 = ((-log_ratio).exp() - 1 + log_ratio) * batch[3]  # (B, T)
    return responses, setup.reward_fn(prompts, responses), log_ratio.sum(1), k3.sum(1)


def samples(setup: Setup, policy, config: ppo.PPOConfig, seed: int) -> list[dict]:
    """samples.md's rows: responses to the first SAMPLE_PROMPTS held-out prompts with RM score and sequence
    KL, drawn by a generator seeded by `seed` (the same draws for every policy; the training RNG untouched)"""
    prompts = setup.task.val_prompts[:SAMPLE_PROMPTS]
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    device = next(policy.parameters()).device
    prompt, generator = [enc[k].to(device) for k in ("input_ids", "attention_mask")], torch.Generator(device)
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    responses = ppo.sample(policy, *prompt, config, pad, eos, generator=generator.manual_seed(seed))
    tokens = (enc["input_ids"], enc["attention_mask"], *(t.cpu() for t in responses))
    texts, scores, kl, _ = scored(setup, policy, setup.task.policy, config, prompts, tokens)
    last = tokens[2].gather(1, tokens[3].sum(1, keepdim=True) - 1).squeeze(1)  # (B,) each one's last token
    ends = (last == eos).tolist()
    return [dict(prompt=p, response=r, eos=e, score=s, kl=k)
            for p, r, e, s, k in zip(prompts, texts, ends, scores.tolist(), kl.tolist())]  # fmt: skip


# ---------------------------------------------------------------------------------------
# The inner loop: one PPO run from the SFT reference
# ---------------------------------------------------------------------------------------
def train_arm(arm: Arm, setup: Setup, options: Options, rcfd: bool = False) -> Arm:
    """Train a fresh policy on the shaped reward r'(w); fill in (and keep) the arm's curve and samples."""
    config = replace(setup.ppo_config, seed=arm.seed)
    if rcfd:  # RCfD trains with no KL term (Rita et al. 2024)
        config = replace(config, kl_coef=0.0, target_kl=None)
    trainer = ppo.PPOTrainer(
        copy.deepcopy(setup.task.policy), config, setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id,
        ref_policy=setup.task.policy,
    )  # fmt: skip
    rng = np.random.default_rng(arm.seed)
    methods = [m for m in shaping.ATTRIBUTIONS if arm.weights.get(m, 0) > 0]  # explanations cost RM rows
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
        rows = rng.choice(len(setup.task.train_prompts), options.batch_size, replace=False)
        enc = setup.tokenizer([setup.task.train_prompts[i] for i in rows], return_tensors="pt", padding=True)
        rollout = trainer.rollout(enc["input_ids"], enc["attention_mask"])
        response_ids, response_mask = rollout.response_ids.cpu(), rollout.response_mask.cpu()
        components, scores = reward_components(
            setup, enc["input_ids"], response_ids, response_mask, methods, rcfd
        )
        stats = trainer.update(rollout, shaping.shape(components, arm.weights), scores)
        scalars.add("train", {"reward" if k == "score" else k: v for k, v in stats.items()}, iteration + 1)
        train_kl = stats["kl"]
    arm.seconds = time.time() - start
    scalars.close()
    arm.samples = samples(setup, trainer.policy, config, options.seed)
    if saves_policy(arm, options):
        report.save_policy(policy_path(options, arm.name), trainer.policy, setup.tokenizer, config)
    report.write_json(arm_path(options, arm.name), arm.to_json())
    return arm


def finished_or_trained(arm: Arm, setup: Setup, options: Options, rcfd: bool = False) -> Arm:
    """The arm's file from an earlier, interrupted run if it holds these weights and seed (and its saved
    policy where --save-policy asks for one); else train it."""
    path, kept = arm_path(options, arm.name), os.path.isdir(policy_path(options, arm.name))
    if os.path.exists(path) and (kept or not saves_policy(arm, options)):
        finished = Arm.from_json(report.read_json(path))
        if finished.weights == arm.weights and finished.seed == arm.seed:
            return finished
    return train_arm(arm, setup, options, rcfd)


# ---------------------------------------------------------------------------------------
# The outer loop, with the baselines before it and the confirmation after it
# ---------------------------------------------------------------------------------------
def experiment(setup: Setup, options: Options) -> dict:
    """Baselines, the BO loop, confirmation and report, over the arms the folder does not hold yet."""
    new_arm = dict(kl_coef=options.kl_coef)
    with parallel.workers(options, setup, build_setup, finished_or_trained) as workers:
        # 1. Baselines: each a full PPO run from the SFT reference with the same budget.
        baselines = {name: BASELINES[name] for name in options.baselines.split(",") if name}
        if "rcfd" in baselines and setup.rcfd_reward_fn is None:
            print("RCfD skipped: not every training prompt has a demonstration")
            del baselines["rcfd"]
        if options.weights is not None:
            baselines["custom"] = report.read_json(options.weights)
        batch = [Arm(name, "baseline", name, w, options.seed, **new_arm) for name, w in baselines.items()]
        arms = {arm.name: arm for arm in workers.train(batch, rcfd=("rcfd",))}

        # 2. Bayesian optimisation of the weights: ask a batch -> train fresh policies -> tell J(w). The
        #    baselines on the same simplex (same seed and budget) are told first, as free observations of J.
        components = options.components.split(",")
        optimizer = bayes_opt.BayesOpt(components, os.path.join(options.out, "trials.jsonl"), options.seed)
        told = {trial["info"]["arm"] for trial in optimizer.trials}
        for name, arm in arms.items():
            if name != "rcfd" and name not in told and set(arm.weights) <= set(components):
                tell(optimizer, components, arm, options)
        n_baselines = sum(trial["info"]["arm"] in baselines for trial in optimizer.trials)
        for name in [trial["info"]["arm"] for trial in optimizer.trials[n_baselines:]]:  # before a resume
            arms[name] = Arm.from_json(report.read_json(arm_path(options, name)))
        while (k := len(optimizer.trials) - n_baselines) < options.trials:
            # Trial k: its own seed (J(w) is noisy over seeds, which the GP models), named by its log line.
            asked = optimizer.ask(min(options.bo_batch, options.trials - k))
            batch = [Arm(f"trial-{n_baselines + k + j}", "trial", "trial", w, options.seed + TRIAL_SEED_OFFSET
                         + k + j, **new_arm) for j, w in enumerate(asked)]  # fmt: skip
            for arm in workers.train(batch):  # told in the order asked
                arms[arm.name] = arm
                tell(optimizer, components, arm, options)
        best_weights, _ = optimizer.best()

        # 3. Confirm: the best weights and sparse again, at fresh seeds.
        fresh_seeds = range(options.seed + 1, options.seed + 1 + options.confirm_seeds)
        groups = [("bo-best", best_weights), ("sparse", BASELINES["sparse"])]
        batch = [Arm(f"{g}-seed{s}", "confirm", g, w, s, **new_arm) for s in fresh_seeds for g, w in groups]
        arms |= {arm.name: arm for arm in workers.train(batch)}

    # 4. Report: tables, curves, the frontier and the credit every method gives each token.
    arm_weights = {name: arm.weights for name, arm in arms.items() if name != "rcfd"}  # RCfD explains R_cfd
    credit = credit_examples(setup, options, {**arm_weights, "bo-best": best_weights})
    reference = samples(setup, setup.task.policy, setup.ppo_config, options.seed)  # what the arms start from
    saved = [policy_path(options, name) for name, arm in arms.items() if saves_policy(arm, options)]
    summary = report.write_all(options.out, arms, best_weights, credit, reference, saved, options.quick)
    print(summary)
    print(f"results in {options.out}: summary.md, samples.md, tokens.html, curves.csv/png, frontier.png")
    return {"arms": arms, "best_weights": best_weights}


def tell(optimizer: bayes_opt.BayesOpt, components: list[str], arm: Arm, options: Options) -> None:
    """Tell the BO J(w) of one finished arm (--objective); the trial log records both objectives."""
    value = arm.objective if options.objective == "regularised" else arm.auc
    info = dict(arm=arm.name, regularised=arm.objective, auc=arm.auc, final=arm.final, kl=arm.final_kl)
    optimizer.tell({c: arm.weights.get(c, 0.0) for c in components}, value, info=info)


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
    response_ids, response_mask = ppo.sample(
        setup.task.policy, enc["input_ids"].to(device), enc["attention_mask"].to(device), setup.ppo_config,
        setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id, generator=generator,
    )  # fmt: skip
    response_ids, response_mask = response_ids.cpu(), response_mask.cpu()
    methods = [m for m in shaping.ATTRIBUTIONS if setup.task.embedded or m not in shaping.TRUTHS]
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
    if options.batch_size > len(setup.task.train_prompts):
        fail(f"--batch-size {options.batch_size}: only {len(setup.task.train_prompts)} training prompts")
    if too_long := task.position_error(setup.task, options.max_new_tokens):  # before the folder is claimed
        fail(too_long)
    with locked(options.out):
        claim_output_folder(options)  # only once the models and prompts have loaded
        return experiment(setup, options)


def parse_options(argv=None) -> Options:
    """Parse and check every option before any work: argparse's exit code 2 and one line."""
    parser, options = parse(argv)  # each check that needs the options alone, in cli.py
    checks = [
        (options.ray_address is None or parallel.has_ray(), "--ray-address needs ray: pip install ray"),
        (not options.tensorboard or report.has_tensorboard(), "--tensorboard needs tensorboard: pip install "
         "tensorboard"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            parser.error(message)
    for name in options.components.split(","):
        if name not in shaping.COMPONENTS:
            parser.error(f"unknown credit component {name!r} in --components; expected {shaping.COMPONENTS}")
    for name in options.baselines.split(","):
        if name and name not in BASELINES:
            parser.error(f"unknown baseline {name!r} in --baselines; expected some of {tuple(BASELINES)}")
    for path, what in [(options.prompts, "--prompts"), (options.weights, "--weights")]:
        if path is not None and not os.path.isfile(path):
            parser.error(f"{what} file {path!r} does not exist")
    weights = [BASELINES[name] for name in options.baselines.split(",") if name]
    if options.weights is not None:
        try:
            weights.append(report.read_json(options.weights))
            shaping.check_weights(weights[-1])
        except (ValueError, AttributeError) as error:
            parser.error(f"--weights file {options.weights!r}: {error}")
    oracles = sorted({*options.components.split(","), *(c for w in weights for c in w)} & set(shaping.TRUTHS))
    if oracles and (options.policy, options.reward_model, options.prompts) != (None, None, None):
        parser.error(f"credit {oracles} is the embedded task's truth: a real model pair has none")
    for name in (options.save_policy or "").split(","):
        if options.save_policy is not None and name not in ["bo-best", *arm_names(options)]:
            parser.error(f"--save-policy: no arm {name!r} in this run; expected some of {arm_names(options)}")
    return options


def arm_path(options: Options, name: str) -> str:
    return os.path.join(options.out, "arms", f"{name}.json")


def policy_path(options: Options, name: str) -> str:
    return os.path.join(options.out, "policies", name)


def saves_policy(arm: Arm, options: Options) -> bool:
    """--save-policy: the bo-best confirmation arms, and the arms it names."""
    names = (options.save_policy or "").split(",")
    return options.save_policy is not None and (arm.name in names or arm.group == "bo-best")


def arm_names(options: Options) -> list[str]:
    """The arms a run with these options trains (as experiment() names them; RCfD even where skipped)."""
    baselines = [name for name in options.baselines.split(",") if name] + ["custom"] * bool(options.weights)
    weights = BASELINES | {"custom": report.read_json(options.weights) if options.weights else {}}
    told = sum(n != "rcfd" and set(weights[n]) <= set(options.components.split(",")) for n in baselines)
    seeds = range(options.seed + 1, options.seed + 1 + options.confirm_seeds)
    confirm = [f"{group}-seed{seed}" for seed in seeds for group in ("bo-best", "sparse")]
    return baselines + [f"trial-{told + k}" for k in range(options.trials)] + confirm


def claim_output_folder(options: Options) -> None:
    """Write config.json (the options and this process's numerics fingerprint), or exit if the folder holds
    finished arms trained with other options; say so where they were trained under other numerics, and
    where this run's numerics are not those docs/summary.md was made under."""
    config_path = os.path.join(options.out, "config.json")
    finished = glob.glob(os.path.join(options.out, "arms", "*.json"))
    fingerprint = numerics.fingerprint(options.numerics)
    if os.path.exists(config_path) and finished:
        now = asdict(options)
        before = asdict(Options()) | report.read_json(config_path)  # a newer option ran at its default
        changed = {k: (before[k], now[k]) for k in EXPERIMENT_OPTIONS if before[k] != now[k]}
        if changed:
            fail(f"{options.out!r} holds a run with other options {changed} (old, new); pick another --out")
        if warning := numerics.changed(before.get("numerics_fingerprint"), fingerprint):
            print(warning)
        print(f"resuming: {len(finished)} finished arms found in {options.out}")
    if note := numerics.versus_docs(fingerprint):
        print(note)
    report.write_json(config_path, asdict(options) | {"numerics_fingerprint": fingerprint})


if __name__ == "__main__":
    main()
