"""run.py's command line, checked whole before any work: each bad value exits with argparse's
code 2 and one line naming it, before the task builds and before the output folder is claimed.

cli.py checks what the options alone can tell (and loads no torch); this file checks what needs the
stages: every PPO and explainer setting through its own dataclass, the credit components and
baselines against credit.py's registry, the --weights file, the oracles (the embedded task's alone),
and the arms --save-policy names. Plumbing, not a stage.
"""

import os

import cli
import credit
import parallel
import ppo
import report
import reward_attribution
import shaping
from cli import Options
from credit import Baseline


def ppo_config(options: Options) -> ppo.PPOConfig:
    """The PPOConfig of the options: each of its fields is a flag (cli.py)."""
    return ppo.PPOConfig(**{name: getattr(options, name) for name in cli.PPO_OPTIONS})


def parse_options(argv=None) -> Options:
    """Parse and check every option before any work: exit code 2 and one line."""
    parser, options = cli.parse(argv)  # each check of the options alone, in cli.py
    if options.ray_address is not None and not parallel.has_ray():
        parser.error("--ray-address needs ray: pip install ray")
    if options.tensorboard and not report.has_tensorboard():
        parser.error("--tensorboard needs tensorboard: pip install tensorboard")
    try:  # every PPO setting (the device too), checked by PPOConfig itself
        ppo_config(options)
    except ValueError as error:
        parser.error(f"PPO settings: {error}")
    try:  # the explainers' settings, checked by AttributionConfig itself
        explainers = ("shap_backend", "shap_permutations", "lime_backend", "lime_samples")
        reward_attribution.AttributionConfig(**{n: getattr(options, n) for n in explainers})
    except ValueError as error:
        parser.error(f"explainer settings: {error}")
    known = credit.credit_names()
    for name in options.components.split(","):
        if name not in known:
            parser.error(f"unknown credit component {name!r} in --components; expected {known}")
    registered = credit.all_baselines()
    for name in options.baselines.split(","):
        if name and name not in registered:
            expected = tuple(registered)
            parser.error(f"unknown baseline {name!r} in --baselines; expected some of {expected}")
    for path, what in [(options.prompts, "--prompts"), (options.weights, "--weights")]:
        if path is not None and not os.path.isfile(path):
            parser.error(f"{what} file {path!r} does not exist")
    try:
        baselines = named_baselines(options)  # --weights' read as 'custom'
        if options.weights is not None:
            shaping.check_weights(baselines["custom"].weights, known)
    except (ValueError, AttributeError) as error:
        parser.error(f"--weights file {options.weights!r}: {error}")
    weighted = (c for b in baselines.values() for c in b.weights)
    named = {*options.components.split(","), *weighted}
    real_pair = (options.policy, options.reward_model, options.prompts) != (None,) * 3
    if (oracles := sorted(named & credit.oracles())) and real_pair:
        parser.error(f"credit {oracles} is the embedded task's truth: a real model pair has none")
    if options.save_policy is not None:
        names = ["bo-best", *arm_names(options)]
        for name in options.save_policy.split(","):
            if name not in names:
                parser.error(f"--save-policy: no arm {name!r} in this run; expected some of {names[1:]}")
    return options


def arm_names(options: Options) -> list[str]:
    """The arms a run of these options trains, as experiment() names them (RCfD
    even where skipped)."""
    baselines = named_baselines(options)
    components = options.components.split(",")
    told = sum(credit.on_the_simplex(b, components) for b in baselines.values())
    trials = [f"trial-{told + k}" for k in range(options.trials)]
    seeds = range(options.seed + 1, options.seed + 1 + options.confirm_seeds)
    confirm = [f"{group}-seed{seed}" for seed in seeds for group in ("bo-best", "sparse")]
    return [*baselines, *trials, *confirm]


def named_baselines(options: Options) -> dict[str, Baseline]:
    """The baselines of --baselines, and --weights' as 'custom'."""
    chosen = [name for name in options.baselines.split(",") if name]
    baselines = {name: credit.all_baselines()[name] for name in chosen}
    if options.weights is not None:
        baselines["custom"] = Baseline(report.read_json(options.weights))
    return baselines
