"""Benchmark: does dense credit still pay against the sparse baselines people train with today?

Sparse RLHF's credit assignment depends on its advantage estimator. With GAE lambda = 0.95 (TRL 0.7's
default) a reward on the last of 100 tokens reaches the first with weight 0.95^100 = 0.006, so at long
responses sparse credit rests on the value head alone. verl and OpenRLHF default to lambda = 1, and
most LLM RL today is critic-free. Each estimator of ppo.py, on every credit method:

    gae-0.95     GAE, lambda 0.95, a value head                     (TRL 0.7, the earlier sweeps here)
    gae-1        GAE, lambda 1: the return minus the value          (verl, OpenRLHF)
    group        reward-to-go minus the mean return of the other G - 1 responses to the prompt
                 (RLOO's baseline; G = 4, so a batch of 16 is 4 prompts)
    reinforce++  the reward-to-go whitened over the batch            (Hu 2025)

Under GRPO and RLOO as verl computes them the per-token rewards are summed into one score per response,
so dense credit changes nothing there; `group` keeps the reward-to-go, so it does.

Each cell (estimator, length range) trains with run.py's own code on `--reviews sized`, with
bench_anchors' length-sweep settings (ABC's PPO protocol at 100 steps, batch 16, minibatch 16) and
bench_anchors' learning-rate rule: the first rate of the ladder, from 4.46e-5 up (from 4.46e-4 at
90-110 tokens: `LADDER_START`), at which sparse and ABC gain a held-out reward of 1 within the
steps; every method of the cell trains at that rate. Methods: sparse, ABC, SHAP and the exact
Shapley credit (the oracle), LIME at 90-110 tokens.

Printed: per cell, each method's final reward, held-out KL, reward at matched KL minus sparse's *of the
same estimator* (bench_frontier's rule, per seed) with 95% intervals over seeds, and collapses; a map
estimator x length -> verdict per dense method; per length, each dense method against the *best* sparse
estimator (the highest mean final reward) at matched KL: the comparison a practitioner would make.

    python benchmarks/bench_estimators.py --workers 2 --numerics reproducible [--ranges 90-110,8-16]
    python benchmarks/bench_estimators.py --smoke      # every step, tiny, on the default task

Finished arms are kept under --out (a folder per cell), so an interrupted benchmark resumes.
Other options go to run.py (e.g. --numerics reproducible, --threads).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_anchors as anchors  # noqa: E402  (pins run.py's CPU numerics before torch loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import checks  # noqa: E402
import report  # noqa: E402

ESTIMATORS = {
    "gae-0.95": dict(advantage="gae", lam=0.95),
    "gae-1": dict(advantage="gae", lam=1.0),
    "group": dict(advantage="group", group_size=4),
    "reinforce++": dict(advantage="reinforce++"),
}
RANGES = {"90-110": (90, 110), "8-16": (8, 16), "40-60": (40, 60)}
METHODS = ("sparse", "abc", "shap", "true_shapley", "lime")
LIME_RANGES = ((90, 110),)  # LIME costs about SHAP's rows; trained where the question is open
SETTINGS = dict(anchors.ABC_PROTOCOL, minibatch_size=anchors.SWEEP_MINIBATCH, iterations=100)  # as (b)
RATES = anchors.LEARNING_RATES[1:]  # from 4.46e-5: ABC's 1.41e-5 learns at no length in 100 steps
# At 90-110 tokens the ladder starts at its last rate, 4.46e-4: there the length sweep's sparse and ABC
# (GAE 0.95) learned at no lower rate, and a rung costs 4 arms of about 400 s. A cut for cost: with the
# other estimators a lower rate might already learn, at a lower KL; it is not tried.
LADDER_START = {(90, 110): 4.46e-4}
CALLS = dict(zip(anchors.VERDICTS, ("ahead", "behind", "within noise")))  # of the dense method
SMOKE = dict(
    ranges=((4, 16),),
    seeds=2,
    iterations=2,
    rates=(1.41e-5, 4.46e-4),
    reviews="sentence",
    estimators={"gae-1": ESTIMATORS["gae-1"], "group": dict(advantage="group", group_size=2)},
    methods=("sparse", "abc", "true_shapley"),
)


def parse() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method and cell (>= 2)")
    parser.add_argument("--ranges", default="90-110,8-16", help=f"of {','.join(RANGES)}, in this order")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS), help="of these, in this order")
    parser.add_argument("--methods", default=",".join(METHODS), help="of these; sparse and abc always")
    parser.add_argument("--out", default="runs/estimators", help="folder of finished arms")
    parser.add_argument("--smoke", action="store_true", help="every step, tiny, on the default task")
    args, run_argv = parser.parse_known_args()
    for name, known in [("ranges", RANGES), ("estimators", ESTIMATORS), ("methods", METHODS)]:
        if unknown := [item for item in getattr(args, name).split(",") if item not in known]:
            parser.error(f"--{name} {getattr(args, name)}: {unknown[0]!r} is not one of {','.join(known)}")
    if args.seeds < 2:
        parser.error(f"--seeds {args.seeds}: expected >= 2 (an interval)")
    args.ranges = tuple(RANGES[name] for name in args.ranges.split(","))
    args.estimators = {name: ESTIMATORS[name] for name in args.estimators.split(",")}
    args.methods = tuple(m for m in METHODS if m in {"sparse", "abc", *args.methods.split(",")})
    args.iterations, args.rates, args.reviews = SETTINGS["iterations"], RATES, "sized"
    args.checked = set()  # bench_anchors.train_cells checks each range's task once
    if args.smoke:
        out = os.path.join(args.out, "smoke") if args.out == "runs/estimators" else args.out
        vars(args).update(SMOKE, out=out)
    checks.parse_options(run_argv)  # a bad option of run.py: its one line, before any work
    return args, run_argv


def train_cell(args, run_argv, estimator: str, lengths) -> dict:
    """{(method, seed): Arm} of one estimator at one length range, at the rate the rule picks."""
    cells = lambda *a, **k: anchors.train_cells(args, run_argv, *a, **k)  # noqa: E731
    settings = {**SETTINGS, **args.estimators[estimator], "iterations": args.iterations}
    prefix = f"{estimator}-{lengths[0]}-{lengths[1]}-"
    print(f"{estimator}, {lengths[0]}-{lengths[1]} tokens:")
    rates = [rate for rate in args.rates if rate >= LADDER_START.get(lengths, 0.0)]
    settings["learning_rate"] = anchors.first_learning(cells, prefix, lengths, settings, rates)
    explained = [m for m in args.methods if m != "lime" or lengths in LIME_RANGES or args.smoke]
    group = cells(f"{prefix}lr{settings['learning_rate']:g}", lengths, settings, explained, args.seeds)
    anchors.table(group, f"{estimator}, {lengths[0]}-{lengths[1]} tokens, lr {settings['learning_rate']:g}")
    return group


def against_best_sparse(sweep: dict, lengths) -> None:
    """Per dense method and estimator: its reward at matched KL minus the best sparse estimator's."""
    at_length = {estimator: cells for (estimator, low_high), cells in sweep.items() if low_high == lengths}
    finals = {e: np.mean([a.final for (m, _), a in c.items() if m == "sparse"]) for e, c in at_length.items()}
    best = max(finals, key=finals.get)
    print(
        f"\n{lengths[0]}-{lengths[1]} tokens: the best sparse estimator is {best} (final reward "
        f"{finals[best]:+.2f}); each dense method against it at matched KL"
    )
    sparse = {key: arm for key, arm in at_length[best].items() if key[0] == "sparse"}
    for estimator, cells in at_length.items():
        for method in dict.fromkeys(m for m, _ in cells if m != "sparse"):
            paired = sparse | {key: arm for key, arm in cells.items() if key[0] == method}
            gaps = list(anchors.matched_gaps(paired, method).values())
            print(f"  {method} ({estimator}) - sparse ({best}): {called(gaps)}")


def verdict_map(sweep: dict, args) -> None:
    """estimator x length -> each dense method's verdict against sparse of the same estimator."""
    ranges = [f"{low}-{high}" for low, high in args.ranges]
    print(
        f"\nmap: dense method - sparse of the same estimator, at matched KL\n{'':<13}{'':<13}"
        + "".join(f"{name:>34}" for name in ranges)
    )
    for method in [m for m in args.methods if m != "sparse"]:
        for estimator in args.estimators:
            row = []
            for lengths in args.ranges:
                cells = sweep.get((estimator, lengths), {})
                gaps = list(anchors.matched_gaps(cells, method).values())
                row.append(f"{called(gaps) if (method, 1) in cells else '-':>34}")
            print(f"{method:<13}{estimator:<13}" + "".join(row))


def called(gaps: list[float]) -> str:
    """ "mean ± half-width (n) -> ahead / behind / within noise", by the 95% interval over seeds."""
    if not gaps:
        return "no seed reaches the matched KL"
    return f"{report.mean_interval(gaps)} (n = {len(gaps)}) -> {CALLS[anchors.verdict(gaps)]}"


def main():
    args, run_argv = parse()
    start, sweep = time.time(), {}
    for lengths in args.ranges:
        for estimator in args.estimators:
            sweep[estimator, lengths] = train_cell(args, run_argv, estimator, lengths)
    verdict_map(sweep, args)
    for lengths in args.ranges:
        against_best_sparse(sweep, lengths)
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
