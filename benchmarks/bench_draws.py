"""Benchmark: how much one run of the bilevel loop tells, by running the default experiment at several seeds.

Each seed is its own draw: its own BO path (the trials' seeds follow --seed), its own pick, and its
own fresh confirmation seeds. Per seed this prints the BO's pick and the paired gaps bo-best - sparse
over that run's confirmation seeds (J, and reward at sparse's KL) with their verdicts, then how
often the pick and each verdict agree with the first seed's.

    python benchmarks/bench_draws.py [--seeds 0,1,2] [--out runs/draws] [run.py options]

Each seed runs as `python run.py --seed S --out OUT/seedS [options]` in a process of its own, so a
finished seed is read back and an interrupted one resumes (run.py's own resume).
"""

import argparse
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import report  # noqa: E402
import run  # noqa: E402


def gaps(arms: dict) -> tuple[list[float], list[float]]:
    """Paired bo-best - sparse over the confirmation seeds: J, and reward at sparse's KL."""
    matched = report.matched_kl_rewards(arms)
    pairs = {}
    for arm in arms.values():
        if arm.kind == "confirm":
            pairs.setdefault(arm.seed, {})[arm.group] = arm
    pairs = [pair for pair in pairs.values() if {"bo-best", "sparse"} <= set(pair)]
    j = [run.objective(pair["bo-best"]) - run.objective(pair["sparse"]) for pair in pairs]
    at_kl = [
        matched[p["bo-best"].name] - matched[p["sparse"].name]
        for p in pairs
        if matched[p["bo-best"].name] is not None and matched[p["sparse"].name] is not None
    ]
    return j, at_kl


def side(values: list[float]) -> str:
    """ahead / behind / within noise, by the 95% interval of the paired gaps."""
    mean, half_width = report.interval(values)
    return "within noise" if not abs(mean) > half_width else ("ahead" if mean > 0 else "behind")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated run.py seeds (0,1,2)")
    parser.add_argument("--out", default="runs/draws", help="one run.py folder per seed under it")
    args, run_argv = parser.parse_known_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    rows = []
    for seed in seeds:
        out = os.path.join(args.out, f"seed{seed}")
        command = [sys.executable, "run.py", *run_argv, "--seed", str(seed), "--out", out]
        print(" ".join(command[1:]), flush=True)
        if subprocess.call(command, cwd=ROOT, stdout=subprocess.DEVNULL) != 0:
            sys.exit(f"run.py --seed {seed} failed; rerun this command to resume it")
        paths = glob.glob(os.path.join(ROOT, out, "arms", "*.json"))
        arms = {os.path.basename(p)[:-5]: report.Arm.from_json(report.read_json(p)) for p in sorted(paths)}
        pick = next(arm.weights for arm in arms.values() if arm.group == "bo-best")
        rows.append((seed, report.weights_text(pick), *gaps(arms)))

    print("\n| seed | BO's pick | J: bo-best - sparse | verdict | at sparse's KL: the same | verdict |")
    print("|---|---|---|---|---|---|")
    for seed, pick, j, at_kl in rows:
        kl_text = f"{report.mean_interval(at_kl)} | {side(at_kl)}" if at_kl else "– | –"
        print(f"| {seed} | {pick} | {report.mean_interval(j)} | {side(j)} | {kl_text} |")
    first = rows[0]
    same_pick = sum(row[1] == first[1] for row in rows)
    same_j = sum(side(row[2]) == side(first[2]) for row in rows)
    same_kl = sum(bool(row[3]) and bool(first[3]) and side(row[3]) == side(first[3]) for row in rows)
    print(
        f"\nof {len(rows)} draws: the same pick as seed {first[0]} in {same_pick}, the same J verdict "
        f"in {same_j}, the same matched-KL verdict in {same_kl} (seed {first[0]} counted)"
    )


if __name__ == "__main__":
    main()
