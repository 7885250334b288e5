"""Benchmark: the reward-KL frontier of every credit method, over KL coefficients and seeds.

A method that reaches a higher reward by drifting further from the reference has not shown
better credit (Ziegler et al. 2019; Gao et al. 2022). So each method is trained with run.py's
own code at several kl_coef values and seeds, and compared with sparse RLHF at matched KL:

    K = min(final held-out KL of the method, final held-out KL of sparse)   same seed, same kl_coef
    gap = reward of the method at K - reward of sparse at K                 along each own trajectory

Both trajectories start at KL 0 and end at their final KL, so both pass K: nothing is
extrapolated. Per method the gaps of all (kl_coef, seed) pairs give a mean and a 95% interval;
the verdict is "dominates sparse on the frontier" when the interval lies above 0, "is dominated"
when below, "within noise" otherwise.

    python benchmarks/bench_frontier.py [--seeds 3] [--kl-coefs 0.02,0.05,0.1,0.2] [--weights FILE]

Finished arms are kept under --out (one folder per kl_coef), so an interrupted benchmark resumes.
"""

import argparse
import os
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import checks  # noqa: E402
import credit  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import shaping  # noqa: E402

METHODS = ("sparse", "uniform", "abc", "shap", "lime")
BEST_WEIGHTS = {"attention": 0.1, "shap": 0.49, "lime": 0.41}  # BO best under --objective auc, rounded


def parse() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method and kl_coef (>= 2)")
    parser.add_argument("--kl-coefs", default="0.02,0.05,0.1,0.2", help="comma-separated KL coefficients")
    parser.add_argument(
        "--weights", help=f"JSON file of weights run as the method 'weights' (default: {BEST_WEIGHTS})"
    )
    parser.add_argument("--out", default="runs/bench_frontier", help="folder of finished arms")
    args, run_argv = parser.parse_known_args()
    if args.seeds < 2:
        parser.error(f"--seeds {args.seeds}: expected >= 2 (an interval needs two seeds)")
    try:
        args.kl_coefs = [float(k) for k in args.kl_coefs.split(",")]
    except ValueError:
        parser.error(f"--kl-coefs {args.kl_coefs!r}: expected comma-separated numbers")
    args.weights = report.read_json(args.weights) if args.weights else BEST_WEIGHTS
    try:
        shaping.check_weights(args.weights)
    except (ValueError, AttributeError) as error:
        parser.error(f"--weights: {error}")
    return args, run_argv


def main():
    args, run_argv = parse()
    methods = {name: credit.all_baselines()[name].weights for name in METHODS} | {"weights": args.weights}
    options = checks.parse_options(["--out", args.out, *run_argv])
    torch.set_num_threads(options.threads)
    setup, start = run.build_setup(options), time.time()
    arms = {}  # (method, kl_coef, seed) -> Arm
    jobs = [(m, k, s) for k in args.kl_coefs for s in range(1, args.seeds + 1) for m in methods]
    folders = {k: replace(options, out=os.path.join(args.out, f"kl{k}"), kl_coef=k) for k in args.kl_coefs}
    for folder in folders.values():
        run.outputs.claim_output_folder(folder)
    for method, kl_coef, seed in tqdm(jobs, desc="arms", disable=None):
        folder = folders[kl_coef]
        setup.ppo_config = replace(setup.ppo_config, kl_coef=kl_coef)
        arm = run.Arm(f"{method}-seed{seed}", "baseline", method, methods[method], seed, kl_coef=kl_coef)
        finished = run.outputs.finished_arm(arm, folder)  # an interrupted sweep's arm file
        arms[method, kl_coef, seed] = finished or run.train_arm(arm, credit.ON_THE_RM, setup, folder)

    print(f"\n{len(arms)} arms, {options.iterations} iterations each; {time.time() - start:.0f} s")
    print("\nfinal held-out reward and KL, mean ± 95% interval over seeds")
    print(f"{'method':<9} {'kl_coef':>7}  {'reward':>16}  {'KL':>16}")
    for method in methods:
        for kl_coef in args.kl_coefs:
            runs = [arms[method, kl_coef, s] for s in range(1, args.seeds + 1)]
            reward = report.mean_interval([a.final for a in runs])
            kl = report.mean_interval([a.final_kl for a in runs])
            print(f"{method:<9} {kl_coef:>7}  {reward:>16}  {kl:>16}")

    print("\nreward at matched KL minus sparse's (same seed and kl_coef), all pairs")
    for method in methods:
        if method == "sparse":
            continue
        gaps = []
        for kl_coef in args.kl_coefs:
            for seed in range(1, args.seeds + 1):
                ours, sparse = arms[method, kl_coef, seed], arms["sparse", kl_coef, seed]
                matched = min(ours.final_kl, sparse.final_kl)
                gaps.append(
                    report.reward_at_kl(ours.curve, matched) - report.reward_at_kl(sparse.curve, matched)
                )
        mean, half = report.interval(gaps)
        if mean - half > 0:
            verdict = "dominates sparse on the frontier"
        elif mean + half < 0:
            verdict = "is dominated"
        else:
            verdict = "within noise"
        print(f"{method:<9} {report.mean_interval(gaps):>16}  (n = {len(gaps)})  {method} {verdict}")
    draw(arms, methods, args)


def draw(arms: dict, methods: dict, args) -> None:
    """Final points of every arm: held-out reward against held-out KL, one colour per method."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for i, method in enumerate(methods):
        points = [
            (arms[method, k, s].final_kl, arms[method, k, s].final)
            for k in args.kl_coefs
            for s in range(1, args.seeds + 1)
        ]
        axis.scatter(*zip(*points), color=plt.cm.tab10(i), label=method, s=18)
    axis.set(xlabel="final held-out KL to the reference", ylabel="final held-out reward")
    axis.set_title(f"Reward-KL frontier: kl_coef in {args.kl_coefs}, {args.seeds} seeds")
    path = os.path.join(args.out, "frontier.png")
    report.save(figure, axis, path)
    print(f"frontier of final points: {path}")


if __name__ == "__main__":
    main()
