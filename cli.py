"""The command line of run.py, its CPU numerics and the lock on its output folder: plumbing, kept apart
from the algorithm.

Options is the one record of every setting: the experiment's own (RunOptions) and every field of ppo.py's
PPOConfig, with the dataclass's default and docstring. Each field becomes a --flag whose help shows its
default once. Nothing here imports torch or a stage (PPOConfig's fields are read from ppo.py's source), so
`python run.py --help` answers before run.py's heavy imports, and the numerics settings can take effect
before torch and numpy load.
"""

import argparse
import ast
import contextlib
import fcntl
import os
import subprocess
import sys
from dataclasses import dataclass, field, fields, make_dataclass, replace


def option(default, description: str, bare=None):
    """A field of Options; `bare`: the value of the flag given with no value (`--flag` alone)."""
    return field(default=default, metadata={"help": description, "bare": bare})


@dataclass
class RunOptions:
    """The experiment's own settings; the PPO settings come from ppo.PPOConfig (Options has both)."""

    seed: int = option(0, "seed of everything: sampling, PPO, BO (the task keeps its own seed)")
    out: str = option("runs/default", "output folder; rerun with the same folder to resume")
    trials: int = option(6, "Bayesian-optimisation trials (each one a full PPO run)")
    iterations: int = option(30, "PPO iterations per run")
    batch_size: int = option(64, "responses per PPO iteration (prompts x --group-size)")
    objective: str = option("regularised", "BO's J: 'regularised' (reward - kl_coef KL) or 'auc' (of reward)")
    eval_every: int = option(2, "PPO iterations between two held-out evaluations")
    eval_prompts: int = option(64, "held-out prompts per evaluation")
    components: str = option("sparse,attention,shap,lime", "credit components whose weights BO searches")
    baselines: str = option("sparse,uniform,abc,shap,lime,rcfd", "baseline arms to run")
    confirm_seeds: int = option(3, "fresh seeds re-running the best weights and sparse")
    shap_permutations: int = option(2, "SHAP permutations per response (the fewest with fidelity >= 0.95)")
    lime_samples: int = option(48, "LIME perturbations per response (the fewest with fidelity >= 0.9)")
    shap_backend: str = option(
        "batched", "SHAP: 'batched' (permutations, one RM call), 'library' (shap) or 'exact' (2^T coalitions)"
    )
    lime_backend: str = option(
        "batched", "LIME: 'batched' (one RM call, one batched solve) or 'library' (lime)"
    )
    weights: str | None = option(None, "JSON file of extra fixed weights, run as the baseline 'custom'")
    policy: str | None = option(None, "policy: hub name or local path (default: the embedded task)")
    reward_model: str | None = option(None, "reward model: hub name or local path (default: embedded)")
    prompts: str | None = option(None, "prompts file, one per line, `prompt<TAB>demonstration` optional")
    reviews: str = option(
        "sentence",
        "embedded reviews: 'sentence' (one each) or 'sized' (several, as long "
        "as --min/--max-new-tokens asks: a task per range)",
    )
    cache_dir: str = option(".cache/task", "where the embedded task's models are cached")
    numerics: str = option(
        "native",
        "CPU kernels: 'native' (this CPU's fastest) or 'reproducible' (pinned: docs/summary.md's numbers "
        "on AMD EPYC CPUs, about 1.75x the time)",
    )
    threads: int = option(1, "CPU threads for torch (tiny models: more threads wait on each other)")
    workers: int = option(1, "arms trained at once, each in a process of its own (parallel.py)")
    bo_batch: int = option(1, "BO trials asked per round and trained together (kriging believer)")
    ray_address: str | None = option(None, "a running Ray cluster to train the arms on ('auto': this one's)")
    quick: bool = option(False, "smoke run in runs/quick: 4 iterations, 2 trials, batch 16, one confirm seed")
    save_policy: str | None = option(
        None,
        "save the final policy of the bo-best confirmation arms, and of the arms named (a,b), with its "
        "tokenizer in <out>/policies/<arm> (save_pretrained)",
        bare="bo-best",
    )
    tensorboard: bool = option(False, "write each arm's training statistics to <out>/tensorboard/<arm>")


def ppo_options() -> list[tuple]:
    """(name, type, field) of each PPOConfig field but its seed (run.py seeds each arm), with the
    dataclass's default and docstring, read from ppo.py's source: importing it would load torch."""
    source = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ppo.py")).read()
    tree = ast.parse(source)
    body = next(node.body for node in tree.body if getattr(node, "name", None) == "PPOConfig")
    options = []
    for node, docstring in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and node.target.id != "seed":
            kind = eval(ast.unparse(node.annotation), {})  # int, float, str, bool or float | None
            default = ast.literal_eval(node.value)
            options.append((node.target.id, kind, option(default, docstring.value.value)))
    return options


RUN_FIELDS = [(f.name, f.type, option(f.default, *f.metadata.values())) for f in fields(RunOptions)]
Options = make_dataclass("Options", RUN_FIELDS + ppo_options())
Options.__module__ = __name__  # pickled by name, cli.Options, for the process workers
PPO_OPTIONS = [name for name, _, _ in ppo_options()]


def option_parser() -> argparse.ArgumentParser:
    """One --flag per field of Options, its default shown once in its help; the PPO ones in a group."""
    parser = argparse.ArgumentParser(description="Explainable dense reward shaping for RLHF, end to end.")
    ppo_group = parser.add_argument_group("PPO (ppo.PPOConfig)")
    for f in fields(Options):
        flag, description = "--" + f.name.replace("_", "-"), f.metadata["help"]
        group = ppo_group if f.name in PPO_OPTIONS else parser
        if f.type is bool:  # --flag / --no-flag
            toggle = argparse.BooleanOptionalAction
            group.add_argument(flag, action=toggle, default=f.default, help=description)
        else:
            kind = int if f.type is int else float if "float" in str(f.type) else str
            how = dict(type=kind, default=f.default, help=f"{description} ({f.default})")
            if f.metadata["bare"] is not None:  # the flag alone means `bare`
                how |= dict(nargs="?", const=f.metadata["bare"])
            group.add_argument(flag, **how)
    return parser


QUICK = dict(iterations=4, trials=2, batch_size=16, eval_every=2, eval_prompts=16, confirm_seeds=1)
EXPERIMENT_OPTIONS = (  # options that change what a finished arm means: these and the PPO ones but device
    *"iterations batch_size seed eval_every eval_prompts shap_permutations lime_samples shap_backend".split(),
    *"lime_backend policy reward_model prompts objective bo_batch numerics reviews".split(),
    *(name for name in PPO_OPTIONS if name != "device"),
)


def parse(argv=None) -> tuple[argparse.ArgumentParser, Options]:
    """The options of a command line, --quick applied, after each check that needs the options alone
    (run.py checks the rest): a bad value exits with argparse's code 2 and one line."""
    parser = option_parser()
    options = Options(**vars(parser.parse_args(argv)))
    if options.quick:  # its own folder by default, so that a full run afterwards does not clash
        options = replace(options, **QUICK, out="runs/quick" if options.out == Options.out else options.out)
    at_least = dict(
        trials=0,
        iterations=1,
        batch_size=2,
        min_new_tokens=0,
        max_new_tokens=1,
        eval_every=1,
        eval_prompts=1,
        confirm_seeds=0,
        shap_permutations=1,
        lime_samples=2,
        threads=1,
        workers=1,
        bo_batch=1,
    )
    for name, low in at_least.items():
        if getattr(options, name) < low:
            parser.error(f"--{name.replace('_', '-')} {getattr(options, name)}: expected >= {low}")
    checks = [
        (options.eval_every <= options.iterations, f"--eval-every {options.eval_every} > --iterations"),
        (options.min_new_tokens <= options.max_new_tokens, "--min-new-tokens > --max-new-tokens"),
        (
            options.group_size >= 1 and options.batch_size % options.group_size == 0,
            f"--batch-size {options.batch_size}: expected a multiple of --group-size {options.group_size}",
        ),
        (
            len(set(components := options.components.split(","))) == len(components) >= 2,
            f"--components {options.components!r}: expected at least 2 distinct components (the BO searches "
            "their weights)",
        ),
        (options.kl_coef >= 0, f"--kl-coef {options.kl_coef}: expected >= 0"),
        (options.target_kl is None or options.target_kl > 0, f"--target-kl {options.target_kl} <= 0"),
        (
            options.objective in ("regularised", "auc"),
            f"--objective {options.objective!r}: expected 'regularised' or 'auc'",
        ),
        (
            options.numerics in ("reproducible", "native"),
            f"--numerics {options.numerics!r}: expected 'reproducible' or 'native'",
        ),
        (
            options.reviews in ("sentence", "sized"),
            f"--reviews {options.reviews!r}: expected 'sentence' or 'sized'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    return parser, options


# Each library picks its CPU kernels when it loads, by what the CPU offers (AVX-512, AVX2, ...), and
# kernels of different width add in a different order: the last bit of a sum differs, and RL turns it
# into another run. The reproducible mode sets, before the libraries load, the variable each one reads
# (numerics.py fingerprints the operations behind each):
REPRODUCIBLE_CPU = {
    "ATEN_CPU_CAPABILITY": "default",  # torch's own vectorised kernels: the generic build, no AVX
    "MKL_CBWR": "COMPATIBLE",  # MKL (torch's matrix products): the one branch meant for Intel and AMD alike
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN's JIT kernels (torch's GELU): SSE4.1
    "OPENBLAS_CORETYPE": "Prescott",  # OpenBLAS, numpy's and scipy's (the BO's GP): its generic kernels
}
NUMPY = "NPY_DISABLE_CPU_FEATURES"  # numpy's own SIMD loops (LIME's kernel, the GP): pin_numerics adds it


def numpy_dispatched() -> str:
    """The SIMD features numpy dispatches to on this CPU, by numpy's own names for its version (1.x: AVX2,
    AVX512F, ...; 2.4: X86_V3, X86_V4, ...), asked in a child process so that numpy loads here after the
    variable. Only features this CPU has: numpy warns at every import about one it cannot disable."""
    code = (
        "import numpy\n"
        "m = getattr(numpy, '_core', getattr(numpy, 'core', None))._multiarray_umath\n"
        "print(' '.join(x for x in m.__cpu_dispatch__ if m.__cpu_features__.get(x)))"
    )
    env = {k: v for k, v in os.environ.items() if k != NUMPY}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    ).stdout.strip()


def pin_numerics(mode: str | None = None) -> None:
    """Set the environment of `mode` for this process and every process it starts (workers, Ray).

    mode None: the --numerics of this process's command line, else run.py's default (for benchmarks).
    It only takes effect if torch and numpy have not loaded yet; `numerics_in_force` checks torch. 'native'
    leaves the environment as it is. A value exported by the user is replaced: in the reproducible mode
    a code path forced from outside must not change a number, as another CPU's path does not.
    REPRODUCIBLE_CPU gets this CPU's numpy features, so that Ray's workers are handed the same list.
    """
    if mode is None:
        early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        early.add_argument("--numerics", default=Options.numerics)
        mode = early.parse_known_args()[0].numerics
    if mode == "reproducible":
        REPRODUCIBLE_CPU[NUMPY] = numpy_dispatched()
        os.environ.update(REPRODUCIBLE_CPU)


def numerics_in_force(mode: str) -> bool:
    """Whether this process computes in `mode`: the variables set, and torch loaded after them."""
    if mode != "reproducible":
        return True
    import torch

    pinned = all(os.environ.get(name) == value for name, value in REPRODUCIBLE_CPU.items())
    return pinned and torch.backends.cpu.get_cpu_capability() == "DEFAULT"


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
