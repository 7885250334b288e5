"""Benchmark: BayesOpt against Dirichlet random search on noisy bumps over the simplex.

The outer loop of Koo et al. 2025 sees J(w), a smooth unimodal bump of the shaping weights w
measured through a noisy PPO run. Here J is a Gaussian bump with one width per weight,
    f(w) = exp(-1/2 sum_k ((w_k - w*_k) / width_k)^2),
its optimum w* inside the simplex, on an edge, or at a vertex, plus Gaussian noise of sd
NOISE_FRACTION x (max f - min f on the simplex). Simple regret = f(w*) - f(recommended w), with the
noise-free f at the point each optimiser recommends: BayesOpt.best() (highest posterior mean),
random search's best noisy observation. Batch columns: 20 evaluations asked in synchronous
batches of 2 and 4 (BayesOpt.ask(n), kriging believer), each batch told before the next is asked.

    python benchmarks/bench_bo.py --seeds 20 [--first-seed 20]   (seeds 0-19 were used to tune the GP bounds)
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project's bayes_opt

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics, before torch and numpy load

import numpy as np  # noqa: E402

import bayes_opt  # noqa: E402

NOISE_FRACTION = 0.075  # noise sd as a fraction of the function's range on the simplex
WIDTH_RANGE = (0.3, 0.6)  # per-weight widths of the bump, drawn uniformly
CHECKPOINTS = (10, 20)  # report regret after this many evaluations
BATCH_SIZES = (2, 4)  # batched BO, compared at the last checkpoint
BATCH_TARGET = 1.2  # batch-2 / sequential regret after the last checkpoint, both pooled over all problems


def make_problem(num_weights, location, rng):
    """A random bump (optimum, widths, noise sd) with its optimum at `location` of the simplex."""
    if location == "inside":
        optimum = 0.5 / num_weights + 0.5 * rng.dirichlet(np.ones(num_weights))
    elif location == "edge":
        pair, share = rng.choice(num_weights, 2, replace=False), rng.uniform(0.2, 0.8)
        optimum = np.zeros(num_weights)
        optimum[pair] = share, 1 - share
    elif location == "vertex":
        optimum = np.eye(num_weights)[rng.integers(num_weights)]
    else:
        raise ValueError(f"location must be 'inside', 'edge' or 'vertex', got {location!r}")
    widths = rng.uniform(*WIDTH_RANGE, num_weights)

    def f(points):  # (M, K) -> (M,)
        return np.exp(-0.5 * np.sum(((points - optimum) / widths) ** 2, axis=-1))

    # f is log-concave, so its minimum over the simplex sits at a vertex; its maximum is f(w*) = 1.
    noise_sd = NOISE_FRACTION * (1 - f(np.eye(num_weights)).min())
    return f, noise_sd


def run_bayes_opt(f, noise_sd, names, seed, rng, batch_size=None):
    """Regret of BayesOpt.best() at each checkpoint: one ask() per evaluation, or ask(batch_size)
    per batch of evaluations."""
    optimizer, regrets = bayes_opt.BayesOpt(names, seed=seed), []
    while len(optimizer.trials) < max(CHECKPOINTS):
        batch = [optimizer.ask()] if batch_size is None else optimizer.ask(batch_size)
        for weights in batch:
            point = np.array([weights[name] for name in names])
            optimizer.tell(weights, float(f(point[None])[0] + noise_sd * rng.standard_normal()))
            if len(optimizer.trials) in CHECKPOINTS:
                recommended = optimizer.best()[0]
                regrets.append(1 - f(np.array([[recommended[name] for name in names]]))[0])
    return regrets


def run_random_search(f, noise_sd, num_weights, rng):
    """Regret of the best noisy observation among Dirichlet(1) samples at each checkpoint."""
    points = rng.dirichlet(np.ones(num_weights), max(CHECKPOINTS))
    observed = f(points) + noise_sd * rng.standard_normal(len(points))
    return [1 - f(points[np.argmax(observed[:n])][None])[0] for n in CHECKPOINTS]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numerics", default="native", help="CPU kernels, as run.py's --numerics (native)")
    parser.add_argument("--seeds", type=int, default=20, help="repetitions per problem")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    args = parser.parse_args()
    start = time.time()
    last = max(CHECKPOINTS)
    print(f"mean simple regret over {args.seeds} seeds (f(w*) = 1; noise sd {NOISE_FRACTION} x range)")
    batch_columns = " ".join(f"{f'B{b}@{last}':>7} {'/BO':>5}" for b in BATCH_SIZES)
    print(
        f"{'K':>2} {'optimum':>8} | {'BO@10':>7} {'RS@10':>7} {'ratio':>6} | "
        f"{'BO@20':>7} {'RS@20':>7} {'ratio':>6} | {batch_columns}"
    )
    ratios = {n: [] for n in CHECKPOINTS}
    pooled = {b: [] for b in (None, *BATCH_SIZES)}  # regret after the last checkpoint, every problem and seed
    for num_weights in (3, 4, 5):
        names = tuple(f"w{k}" for k in range(num_weights))
        for location in ("inside", "edge", "vertex"):
            bo_regrets, rs_regrets, batch_regrets = [], [], {b: [] for b in BATCH_SIZES}
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                f, noise_sd = make_problem(num_weights, location, np.random.default_rng([seed, num_weights]))
                bo_regrets.append(run_bayes_opt(f, noise_sd, names, seed, np.random.default_rng([seed, 1])))
                rs_regrets.append(
                    run_random_search(f, noise_sd, num_weights, np.random.default_rng([seed, 2]))
                )
                for b in BATCH_SIZES:
                    noise_rng = np.random.default_rng([seed, 1])  # the same noise draws as sequential BO
                    batch_regrets[b].append(run_bayes_opt(f, noise_sd, names, seed, noise_rng, b)[-1])
            bo_mean, rs_mean = np.mean(bo_regrets, axis=0), np.mean(rs_regrets, axis=0)
            row = []
            for i, n in enumerate(CHECKPOINTS):
                ratios[n].append(bo_mean[i] / rs_mean[i])
                row.append(f"{bo_mean[i]:7.4f} {rs_mean[i]:7.4f} {ratios[n][-1]:6.2f}")
            pooled[None].extend(regrets[-1] for regrets in bo_regrets)
            for b in BATCH_SIZES:
                pooled[b].extend(batch_regrets[b])
                ratio = np.mean(batch_regrets[b]) / bo_mean[-1] if bo_mean[-1] > 0 else float("nan")
                row.append(f"{np.mean(batch_regrets[b]):7.4f} {ratio:5.2f}")
            print(
                f"{num_weights:>2} {location:>8} | " + " | ".join(row[:2]) + " | " + " ".join(row[2:]),
                flush=True,
            )
    summary = ", ".join(f"after {n}: {np.mean(ratios[n]):.2f}" for n in CHECKPOINTS)
    print(f"average regret ratio BO / random search: {summary}  (target after 10: <= 0.50)")
    sequential = np.mean(pooled[None])
    summary = ", ".join(f"batch {b}: {np.mean(pooled[b]) / sequential:.2f}" for b in BATCH_SIZES)
    print(f"mean regret after {last} over all problems, batch BO / sequential BO: {summary}")
    met = "met" if np.mean(pooled[BATCH_SIZES[0]]) <= BATCH_TARGET * sequential else "NOT met"
    print(f"batch {BATCH_SIZES[0]} within {BATCH_TARGET}x of sequential: {met}")
    print(f"time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
