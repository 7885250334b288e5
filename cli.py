"""The command line of run.py and the lock on its output folder: plumbing, kept apart from the algorithm.

Options is the one record of every setting; each field becomes a --flag whose help shows its default once.
Nothing here imports torch or a stage, so `python run.py --help` answers before run.py's heavy imports.
"""

import argparse
import contextlib
import fcntl
import os
import sys
from dataclasses import dataclass, field, fields


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
    kl_coef: float = option(0.05, "per-token KL penalty, and the yardstick of J (RCfD trains at 0)")
    target_kl: float | None = option(None, "KL budget: every arm adapts kl_coef towards this sequence KL")
    kl_horizon: int = option(10000, "adaptive KL controller horizon, in responses (Ziegler et al. 2019)")
    objective: str = option("regularised", "BO's J: 'regularised' (reward - kl_coef KL) or 'auc' (of reward)")
    eval_every: int = option(2, "PPO iterations between two held-out evaluations")
    eval_prompts: int = option(64, "held-out prompts per evaluation")
    components: str = option("sparse,attention,shap,lime", "credit components whose weights BO searches")
    baselines: str = option("sparse,uniform,abc,shap,lime,rcfd", "baseline arms to run")
    confirm_seeds: int = option(3, "fresh seeds re-running the best weights and sparse")
    lime_samples: int = option(48, "LIME perturbations per response (the fewest with fidelity >= 0.9)")
    weights: str | None = option(None, "JSON file of extra fixed weights, run as the baseline 'custom'")
    policy: str | None = option(None, "policy: hub name or local path (default: the embedded task)")
    reward_model: str | None = option(None, "reward model: hub name or local path (default: embedded)")
    prompts: str | None = option(None, "prompts file, one per line, `prompt<TAB>demonstration` optional")
    cache_dir: str = option(".cache/task", "where the embedded task's models are cached")
    device: str = option("auto", "auto, cpu or cuda")
    threads: int = option(1, "CPU threads for torch (tiny models: more threads wait on each other)")
    workers: int = option(1, "arms trained at once, each in a process of its own (parallel.py)")
    bo_batch: int = option(1, "BO trials asked per round and trained together (kriging believer)")
    ray_address: str | None = option(None, "a running Ray cluster to train the arms on ('auto': this one's)")
    quick: bool = option(False, "smoke run in runs/quick: 4 iterations, 2 trials, batch 16, one confirm seed")


def option_parser() -> argparse.ArgumentParser:
    """One --flag per field of Options, its default shown once in its help."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(Options):
        flag, description = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.type is bool:
            parser.add_argument(flag, action="store_true", help=description)
        else:
            kind = int if f.type is int else float if "float" in str(f.type) else str
            parser.add_argument(flag, type=kind, default=f.default, help=f"{description} ({f.default})")
    return parser


QUICK = dict(iterations=4, trials=2, batch_size=16, eval_every=2, eval_prompts=16, confirm_seeds=1)
EXPERIMENT_OPTIONS = (  # options that change what a finished arm means
    "iterations", "batch_size", "seed", "learning_rate", "kl_coef", "target_kl", "kl_horizon", "eval_every",
    "eval_prompts", "lime_samples", "policy", "reward_model", "prompts", "max_new_tokens", "min_new_tokens",
    "objective", "bo_batch",
)  # fmt: skip


def fail(message: str):
    """A user's mistake: one line and argparse's exit code, no traceback."""
    print(f"run.py: error: {message}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def locked(folder: str):
    """One run per folder: an exclusive lock, dropped by the OS when the run ends, crashed or not."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fail(f"{folder!r} is in use by another run.py; wait for it or pick another --out")
        yield
