"""Benchmark: how many iterations fixed weights need to reach sparse RLHF's final reward.

The default run confirms the BO's best weights on 3 fresh seeds, and the ratio of 3 seeds is
noisy (one seed one evaluation later moves it by 0.02-0.03). This trains the same pair, the
weights and sparse, on more seeds with run.py's own training and report code, and prints the
ratio of the means with each seed's own ratio beside it:

    iterations ratio = mean_s reach(weights, s) / mean_s reach(sparse, s)
    reach(arm, s) = first evaluated iteration at which arm's held-out reward >= sparse's final at seed s

    python benchmarks/bench_ratio.py --seeds 6 [--weights '{"shap": 1.0}'] [run.py options]

Finished arms are kept in --out (default runs/bench_ratio), so an interrupted benchmark resumes.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

import report
import run
import shaping


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds to train each arm on")
    parser.add_argument("--first-seed", type=int, default=1, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument(
        "--weights",
        default='{"attention": 0.1, "shap": 0.49, "lime": 0.41}',
        help="JSON weights compared with sparse (default: the default run's best, rounded)",
    )
    args, run_argv = parser.parse_known_args()
    options = run.parse_options(["--out", "runs/bench_ratio", *run_argv])
    weights = json.loads(args.weights)
    shaping.check_weights(weights)  # before minutes of training, not after
    torch.set_num_threads(options.threads)
    run.claim_output_folder(options)
    setup = run.build_setup(options)

    start, arms, seeds = time.time(), {}, range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        for name, arm_weights in [("bo-best", weights), ("sparse", run.BASELINES["sparse"])]:
            arms[f"{name}-seed{seed}"] = run.train_arm(
                f"{name}-seed{seed}", arm_weights, seed, setup, options
            )
    reach = report.reach_iterations(arms)
    dense, sparse = (
        np.array([report.iterations_needed(arms[f"{name}-seed{s}"], reach[f"{name}-seed{s}"]) for s in seeds])
        for name in ("bo-best", "sparse")
    )

    print(
        f"weights {weights} vs sparse; learning rate {options.learning_rate}, "
        f"{options.iterations} iterations, "
        f"evaluation every {options.eval_every}"
    )
    print(" seed  reach(weights)  reach(sparse)  ratio   final(weights)  final(sparse)")
    for k, seed in enumerate(seeds):
        print(
            f"{seed:5d}  {dense[k]:14d}  {sparse[k]:13d}  {dense[k] / sparse[k]:5.2f}   "
            f"{arms[f'bo-best-seed{seed}']['final']:+14.2f}  {arms[f'sparse-seed{seed}']['final']:+13.2f}"
        )
    print(report.confirmation(arms, reach))
    groups = [slice(k, k + 3) for k in range(0, args.seeds - 2, 3)]
    print(
        "ratio of each 3 seeds in turn (what one default run sees):",
        ", ".join(f"{dense[g].mean() / sparse[g].mean():.2f}" for g in groups),
    )
    print(f"time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
