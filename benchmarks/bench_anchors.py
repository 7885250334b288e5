"""Benchmark: when does dense credit help? The anchors' own comparisons, on the embedded task.

The ABC paper's published figures (IMDb, GPT-2 policy and RM) make three claims that our short default
runs never tested; Koo et al. make a fourth:
  1. under ABC's PPO protocol at 8-16 new tokens, ABC (attention credit) lies above sparse RLHF on the
     reward-KL frontier;
  2. at 90-110 and 140-160 new tokens, sparse RLHF falls behind ABC and uniform credit ...
  3. ... with single seeds collapsing;
  4. dense credit from explanations (SHAP, LIME) beats sparse credit.
Each cell trains with run.py's own code (run.train_arm) on `--reviews sized`: an embedded
task per length range, whose SFT policy writes reviews of several sentences that long and whose RM
scores the mean sentiment of their sentences. The oracle arm `true_shapley` is dense credit that is
exactly right (the task's exact Shapley values), which separates "does dense credit help?" from "is
the explainer good enough?".

    (lr)  ABC's learning rate (1.41e-5, tuned for a 124M GPT-2) on our 2-layer policy: the first rate of
          LEARNING_RATES at which sparse and ABC gain LEARNS reward within ABC's 150 steps is used for
          every method of (a)
    (a)   ABC's protocol at 8-16 tokens, `--seeds` seeds: sparse, uniform, ABC, SHAP, LIME, true_shapley
    (b)   ABC's length sweep at `--sweep-iterations` steps, `--sweep-seeds` seeds: sparse, uniform, ABC,
          true_shapley at every range, SHAP and LIME at 8-16 and 90-110; per range, every method at the
          first rate from (lr)'s choice up at which sparse and ABC learn in those steps (the same check)
    (c)   our protocol at 8-16; if it and (a) disagree on ABC against sparse, ABC's settings one at a time
          on ours (learning rate, KL controller, batch size, iterations, minibatch)

Compared with sparse at matched KL (bench_frontier.py's rule: per seed, K = the smaller final held-out
KL of the two; the reward of each trajectory where it first reaches K), with 95% intervals over seeds;
at long lengths also on final reward, as the anchor's figure reads. A seed *collapses* when its final
held-out reward is below half its best (with a best above 0). Verdicts: "reproduces" (the interval on
the anchor's side of 0), "does not reproduce" (on the other side), "within noise".

    python benchmarks/bench_anchors.py --workers 2 [--seeds 5] [--sweep-seeds 3] [--out runs/anchors]
    python benchmarks/bench_anchors.py --smoke      # every step on the default task, in seconds

Finished arms are kept under --out (a folder per cell group), so an interrupted benchmark resumes.
`--parts` runs some of (lr), (a), (c), (b) (each prints its own tables, verdicts and figure; without
(lr), `--learning-rate` gives its choice), `--ranges` some of the sweep's ranges, `--methods` some of
the methods, e.g. `--parts b --ranges 90-110 --methods sparse,uniform,abc,true_shapley
--learning-rate 4.46e-5`.
Other options go to run.py (e.g. --numerics reproducible, --threads).
"""

import argparse
import os
import random
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import checks  # noqa: E402
import credit  # noqa: E402
import language  # noqa: E402
import parallel  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import sampling  # noqa: E402
import task  # noqa: E402

# TRL 0.7.4's PPO as the ABC repository's scripts ran it: they set the learning rate, 4 epochs and a batch
# of 16, and TRL's PPOConfig defaults mini_batch_size = 1 (and no gradient accumulation): 64 optimizer
# steps an iteration. GAE lambda 0.95, gamma 1, clip 0.2 and vf_coef 0.1 are ppo.PPOConfig's defaults too.
ABC_PROTOCOL = dict(
    learning_rate=1.41e-5,
    kl_coef=0.2,
    target_kl=6.0,
    kl_horizon=10000,
    batch_size=16,
    iterations=150,
    minibatch_size=1,
)
SWEEP_MINIBATCH = 16  # the length sweep (b) as it first ran, before ABC's minibatch of 1 was found
FLIPS = {  # (c): one of ABC's settings at a time on our protocol
    "learning rate": ("learning_rate",),
    "KL controller": ("kl_coef", "target_kl", "kl_horizon"),
    "batch size": ("batch_size",),
    "iterations": ("iterations",),
    "minibatch": ("minibatch_size",),
}
RANGES = ((8, 16), (20, 30), (40, 60), (90, 110), (140, 160))
EXPLAINED_RANGES = ((8, 16), (90, 110))  # where the sweep also trains SHAP and LIME
PROTOCOL_METHODS = ("sparse", "uniform", "abc", "shap", "lime", "true_shapley")
SWEEP_METHODS = ("sparse", "uniform", "abc", "true_shapley")
LEARNING_RATES = (1.41e-5, 4.46e-5, 1.41e-4, 4.46e-4)  # ABC's, then steps of sqrt(10)
LEARNS = 1.0  # held-out reward gained by the end (mean over sparse's and ABC's seeds) that counts as learning
VERDICTS = ("reproduces", "does not reproduce", "within noise")
PARTS = ("lr", "a", "c", "b")
EVALUATIONS = 15  # held-out evaluations per arm, whatever its iterations
SMOKE = dict(
    ranges=((4, 16),),
    short=(4, 16),
    reviews="sentence",
    seeds=2,
    sweep_seeds=2,
    sweep_iterations=2,
    learning_rates=(1.41e-5, 4.46e-4),
    methods=("sparse", "uniform", "abc", "true_shapley"),
)
SMOKE_RUN = dict(iterations=2, batch_size=4, eval_prompts=4, shap_permutations=2, lime_samples=8)


def parse() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds of (a), (c) and the learning-rate check")
    parser.add_argument("--sweep-seeds", type=int, default=3, help="seeds per cell of the length sweep (b)")
    parser.add_argument("--sweep-iterations", type=int, default=100, help="PPO steps of the sweep (b)")
    parser.add_argument("--out", default="runs/anchors", help="folder of finished arms and figures")
    parser.add_argument("--parts", default="lr,a,c,b", help="which parts to run, comma-separated")
    parser.add_argument(
        "--ranges",
        default=",".join(f"{lo}-{hi}" for lo, hi in RANGES),
        help="the sweep's new-token ranges, comma-separated, of these five",
    )
    parser.add_argument("--methods", default=",".join(PROTOCOL_METHODS), help="of these, comma-separated")
    parser.add_argument("--learning-rate", type=float, help="every method's, when the parts leave out (lr)")
    parser.add_argument("--smoke", action="store_true", help="every step, tiny, on the default task")
    args, run_argv = parser.parse_known_args()
    args.parts = args.parts.split(",")
    if any(part not in PARTS for part in args.parts) or ("c" in args.parts and "a" not in args.parts):
        parser.error(f"--parts {','.join(args.parts)}: expected some of {','.join(PARTS)}, c only with a")
    methods = args.methods.split(",")
    if any(m not in PROTOCOL_METHODS for m in methods) or not {"sparse", "abc"} <= set(methods):
        expected = f"expected some of {','.join(PROTOCOL_METHODS)}, sparse and abc among them"
        parser.error(f"--methods {args.methods}: {expected}")
    names = {f"{lo}-{hi}": (lo, hi) for lo, hi in RANGES}
    if unknown := [name for name in args.ranges.split(",") if name not in names]:
        parser.error(f"--ranges {args.ranges}: {unknown[0]} is not one of {','.join(names)}")
    if ("lr" in args.parts) == (args.learning_rate is not None):
        parser.error("--learning-rate: give it exactly when --parts leaves out lr (which would choose it)")
    for name in ("seeds", "sweep_seeds"):
        if getattr(args, name) < 2:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 2 (an interval)")
    if args.sweep_iterations < 1:
        parser.error(f"--sweep-iterations {args.sweep_iterations}: expected >= 1")
    args.ranges = tuple(names[name] for name in args.ranges.split(","))
    args.short, args.reviews, args.learning_rates = RANGES[0], "sized", LEARNING_RATES
    args.methods, args.checked = tuple(m for m in PROTOCOL_METHODS if m in methods), set()
    if args.smoke:
        out = os.path.join(args.out, "smoke") if args.out == "runs/anchors" else args.out
        vars(args).update(SMOKE, out=out)
    checks.parse_options(run_argv)  # a bad option of run.py: its one line, before any work
    return args, run_argv


def group_options(args, run_argv, group: str, lengths, protocol: dict) -> run.Options:
    """run.py's options of one group of cells: its folder, its length range, its protocol."""
    low, high = (str(n) for n in lengths)
    argv = ["--out", os.path.join(args.out, group), "--reviews", args.reviews]
    argv += ["--min-new-tokens", low, "--max-new-tokens", high, *run_argv]
    options = replace(checks.parse_options(argv), **(protocol | (SMOKE_RUN if args.smoke else {})))
    return replace(options, eval_every=max(1, options.iterations // EVALUATIONS))


def built_setup(options: run.Options) -> run.Setup:
    setup = run.build_setup(options)
    if too_long := task.position_error(setup.task, options.max_new_tokens):
        cli.fail(too_long)
    return setup


@torch.no_grad()
def check_task(setup: run.Setup, options: run.Options, n_reviews: int = 500, n_responses: int = 32) -> None:
    """One line on a range's task: its RM against the true game on held-out reviews of that length, its
    SFT responses at --min/--max-new-tokens that end with EOS, and run.py's SHAP credit of them against
    the true Shapley values (RM and explainer together, as bench_credit.py measures fidelity)."""
    lengths = (options.min_new_tokens, options.max_new_tokens)
    config = task.TaskConfig(response_tokens=lengths if options.reviews == "sized" else None)
    rng = random.Random(2024)
    reviews = [language.random_review(rng, config.review_words()) for _ in range(n_reviews)]
    scores = setup.reward_fn([""] * n_reviews, [" ".join(words) for words in reviews]).numpy()
    values = np.array([language.review_value(words) for words in reviews])
    tokenizer, prompts = setup.tokenizer, setup.task.val_prompts[:n_responses]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    generator = torch.Generator().manual_seed(options.seed)
    ids, mask = sampling.sample(
        setup.task.policy,
        enc["input_ids"],
        enc["attention_mask"],
        setup.ppo_config,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        generator=generator,
    )
    ends = ids.gather(1, mask.sum(1, keepdim=True) - 1) == tokenizer.eos_token_id  # (B, 1)
    components, _ = run.reward_components(setup, enc["input_ids"], ids, mask, ["shap", "true_shapley"])
    credit = report.fidelity(components["shap"], components["true_shapley"], mask)
    print(
        f"task {lengths[0]}-{lengths[1]}: RM vs the true game r = {np.corrcoef(scores, values)[0, 1]:.2f}, "
        f"sign {np.mean((scores > 0) == (values > 0)):.0%} (n = {n_reviews}); SFT responses ending with EOS "
        f"{ends.float().mean():.0%} (n = {n_responses}); SHAP credit vs true Shapley r = {credit:.2f}"
    )


def train_cells(args, run_argv, group: str, lengths, protocol: dict, methods, seeds: int) -> dict:
    """{(method, seed): Arm} of one group of cells: one folder, one protocol, one length range."""
    low, high = lengths
    options = group_options(args, run_argv, group, lengths, protocol)
    setup = built_setup(options)
    if lengths not in args.checked:  # each range's task once, when first built
        args.checked.add(lengths)
        check_task(setup, options)
    batch = [
        (
            run.Arm(f"{m}-seed{s}", "baseline", m, credit.all_baselines()[m].weights, s, options.kl_coef),
            credit.ON_THE_RM,
        )
        for m in methods
        for s in range(1, seeds + 1)
    ]
    start = time.time()
    with cli.locked(options.out):
        run.outputs.claim_output_folder(options)
        with parallel.workers(options, setup, run.build_setup, run.outputs.finished_arm) as workers:
            trained = workers.train(run.train_arm, batch)
    steps = f"{options.iterations} steps, {time.time() - start:.0f} s"
    print(f"{group}: {len(batch)} arms at {low}-{high} tokens, {steps}")
    return {(arm.group, arm.seed): arm for arm in trained}


def first_learning(cells, prefix: str, lengths, protocol: dict, rates) -> float:
    """The first of `rates` at which sparse and ABC (2 seeds) gain LEARNS held-out reward by the end of
    `protocol`'s steps, a line a rate; the last rate if none does. Cells go to folder {prefix}lr{rate}."""
    for rate in rates:
        group = cells(
            f"{prefix}lr{rate:g}", lengths, {**protocol, "learning_rate": rate}, ("sparse", "abc"), 2
        )
        gain = np.mean([arm.final - arm.curve[0]["reward"] for arm in group.values()])
        learns = "learns" if gain >= LEARNS else "does not learn"
        at = f"{lengths[0]}-{lengths[1]} tokens, learning rate {rate:g}"
        print(f"  {at}: held-out reward gained {gain:+.2f} ({learns})")
        if gain >= LEARNS:
            return rate
    return rates[-1]


def matched_gaps(cells: dict, method: str) -> dict[int, float]:
    """{seed: reward of `method` minus sparse's at K}, K = the smaller of their final held-out KLs.

    A pair where one trajectory never reaches K is left out (K below 0: the k1 estimate of a final
    KL can be negative on 64 prompts, and the other trajectory, from 0 upwards, never reaches it)."""
    gaps = {}
    for (name, seed), arm in sorted(cells.items()):
        if name == method:
            sparse = cells["sparse", seed]
            kl = min(arm.final_kl, sparse.final_kl)
            ours, theirs = report.reward_at_kl(arm.curve, kl), report.reward_at_kl(sparse.curve, kl)
            if ours is not None and theirs is not None:
                gaps[seed] = ours - theirs
    return gaps


def final_gaps(cells: dict, method: str) -> list[float]:
    """Per seed: final held-out reward of `method` minus sparse's."""
    return [
        arm.final - cells["sparse", s].final for (name, s), arm in sorted(cells.items()) if name == method
    ]


def collapsed(arm) -> bool:
    """Final held-out reward below half the arm's best (a best above 0)."""
    best = max(point["reward"] for point in arm.curve)
    return best > 0 and arm.final < best / 2


def verdict(gaps: list[float], anchor_sign: int = 1) -> str:
    """'reproduces' when the 95% interval lies on the anchor's side of 0, 'does not reproduce' the other."""
    mean, half = report.interval(gaps)
    if np.isnan(half) or abs(mean) <= half:
        return VERDICTS[2]
    return VERDICTS[0] if np.sign(mean) == anchor_sign else VERDICTS[1]


def table(cells: dict, title: str) -> None:
    print(f"\n{title}: mean ± 95% interval over seeds")
    print(f"{'method':<13} {'final reward':>15} {'held-out KL':>15} {'at matched KL':>15} {'collapse':>8}")
    for method in dict.fromkeys(name for name, _ in cells):
        arms = [arm for (name, _), arm in cells.items() if name == method]
        gaps = list(matched_gaps(cells, method).values()) if method != "sparse" else []
        gap = report.mean_interval(gaps) + f" n={len(gaps)}" * (len(gaps) < len(arms)) if gaps else ""
        share = f"{sum(map(collapsed, arms))}/{len(arms)}"
        print(
            f"{method:<13} {report.mean_interval([a.final for a in arms]):>15} "
            f"{report.mean_interval([a.final_kl for a in arms]):>15} {gap:>15} {share:>8}"
        )


def claim(text: str, gaps, anchor_sign: int = 1) -> None:
    """One verdict line; `gaps` a list, or matched_gaps' {seed: gap}."""
    gaps = list(gaps.values()) if isinstance(gaps, dict) else gaps
    if not gaps:
        print(f"  {text}: no seed where both trajectories reach the matched KL -> {VERDICTS[2]}")
        return
    print(f"  {text}: {report.mean_interval(gaps)} (n = {len(gaps)}) -> {verdict(gaps, anchor_sign)}")


def main():
    args, run_argv = parse()
    start, short = time.time(), args.short
    cells = lambda *a, **k: train_cells(args, run_argv, *a, **k)  # noqa: E731

    # (lr) The anchor's learning rate, and the nearest one that learns within its steps, for every method.
    chosen = args.learning_rate or args.learning_rates[-1]
    if "lr" in args.parts:
        print("(lr) does ABC's learning rate learn on a 2-layer policy in ABC's steps? (sparse and ABC)")
        chosen = first_learning(cells, "", short, ABC_PROTOCOL, args.learning_rates)
    protocol = {**ABC_PROTOCOL, "learning_rate": chosen}
    print(
        f"  every method of (a) trains at learning rate {chosen:g}, of (b) at the first from it that learns"
    )

    # (a) ABC's protocol at the shortest range, and (c) ours beside it.
    theirs, ours, sweep = {}, {}, {}
    if "a" in args.parts:
        theirs = cells("abc-protocol", short, protocol, args.methods, args.seeds)
        table(theirs, f"(a) ABC's protocol, {short[0]}-{short[1]} tokens")
    if "c" in args.parts:
        ours = cells("our-protocol", short, {}, args.methods, args.seeds)
        table(ours, f"(c) our protocol, {short[0]}-{short[1]} tokens")
        their_verdict, our_verdict = (verdict(list(matched_gaps(c, "abc").values())) for c in (theirs, ours))
        if their_verdict != our_verdict:
            print(
                f"\n(c) ABC vs sparse: {their_verdict} under ABC's protocol, {our_verdict} under ours; "
                "ABC's settings one at a time on ours"
            )
        for name, keys in FLIPS.items() if their_verdict != our_verdict else ():
            flipped = cells(
                f"flip-{name.replace(' ', '-')}",
                short,
                {key: protocol[key] for key in keys},
                ("sparse", "abc"),
                args.seeds,
            )
            claim(f"ours with ABC's {name}: ABC - sparse at matched KL", matched_gaps(flipped, "abc"))

    # (b) The length sweep.
    for lengths in args.ranges if "b" in args.parts else ():
        explained = ("shap", "lime") if lengths in EXPLAINED_RANGES or args.smoke else ()
        methods = [m for m in (*SWEEP_METHODS, *explained) if m in args.methods]
        steps = {**protocol, "iterations": args.sweep_iterations, "minibatch_size": SWEEP_MINIBATCH}
        prefix = f"sweep-{lengths[0]}-{lengths[1]}-"
        rates = [rate for rate in args.learning_rates if rate >= chosen] or [chosen]
        steps["learning_rate"] = first_learning(cells, prefix, lengths, steps, rates)
        sweep[lengths] = cells(
            f"{prefix}lr{steps['learning_rate']:g}", lengths, steps, methods, args.sweep_seeds
        )
        title = (
            f"(b) length sweep, {lengths[0]}-{lengths[1]} tokens, {args.sweep_iterations} steps, "
            f"learning rate {steps['learning_rate']:g}"
        )
        table(sweep[lengths], title)

    print("\nverdicts (matched KL unless said; 95% intervals over seeds)")
    if theirs:
        at = f"{short[0]}-{short[1]} tokens"
        claim(f"1. ABC above sparse, ABC's protocol, {at}", matched_gaps(theirs, "abc"))
    if ours:
        claim("   the same under our protocol", matched_gaps(ours, "abc"))
    long = [lengths for lengths in sweep if lengths[0] >= 90] or list(sweep)[-1:]
    for lengths in long:
        for method in [m for m in ("abc", "uniform") if (m, 1) in sweep[lengths]]:
            above = f"{method} above sparse at {lengths[0]}-{lengths[1]}"
            claim(f"2. {above}, final reward", final_gaps(sweep[lengths], method))
            claim(f"   {above}", matched_gaps(sweep[lengths], method))
        share = [
            collapsed(sweep[lengths]["sparse", s]) - collapsed(sweep[lengths]["abc", s])
            for s in range(1, args.sweep_seeds + 1)
        ]
        claim(f"3. sparse collapses more often than ABC at {lengths[0]}-{lengths[1]} (share)", share)
    if short in sweep and long and long[-1] != short:
        at_long, at_short = matched_gaps(sweep[long[-1]], "abc"), matched_gaps(sweep[short], "abc")
        growth = [at_long[seed] - at_short[seed] for seed in at_long if seed in at_short]
        claim(f"2. ABC's advantage grows from {short[0]}-{short[1]} to {long[-1][0]}-{long[-1][1]}", growth)
    groups = ([(short, theirs)] if theirs else []) + [(r, sweep[r]) for r in long if r != short or not theirs]
    for method in ("shap", "lime", "true_shapley"):
        for lengths, group in groups:
            if (method, 1) in group:
                claim(f"4. {method} above sparse at {lengths[0]}-{lengths[1]}", matched_gaps(group, method))
    draw(args, theirs, sweep)
    print(f"\nwall time {time.time() - start:.0f} s")


def draw(args, theirs: dict, sweep: dict) -> None:
    """anchors-frontier.png: every evaluation of (a), reward against KL. anchors-length.png: per range,
    held-out reward by step (mean over seeds) above, and the frontier below. Each when its part ran."""
    if theirs:
        figure, axis = plt.subplots(figsize=(7, 5))
        frontier(axis, theirs)
        axis.set_title(f"ABC's protocol on the embedded task, {args.short[0]}-{args.short[1]} tokens")
        report.save(figure, axis, os.path.join(args.out, "anchors-frontier.png"))
        print(f"figure: {args.out}/anchors-frontier.png")
    if not sweep:
        return
    figure, axes = plt.subplots(2, len(sweep), figsize=(3.6 * len(sweep), 6.4), squeeze=False)
    for column, (lengths, cells) in enumerate(sweep.items()):
        for i, method in enumerate(dict.fromkeys(name for name, _ in cells)):
            curves = [arm.curve for (name, _), arm in cells.items() if name == method]
            steps = [point["iteration"] for point in curves[0]]
            mean = np.mean([[point["reward"] for point in curve] for curve in curves], axis=0)
            axes[0, column].plot(steps, mean, color=plt.cm.tab10(i), label=method)
        axes[0, column].set(title=f"{lengths[0]}-{lengths[1]} new tokens", xlabel="PPO step", ylabel="reward")
        frontier(axes[1, column], cells)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(args.out, "anchors-length.png"), dpi=110)
    plt.close(figure)
    print(f"figure: {args.out}/anchors-length.png")


def frontier(axis, cells: dict) -> None:
    for i, method in enumerate(dict.fromkeys(name for name, _ in cells)):
        arms = [arm for (name, _), arm in cells.items() if name == method]
        points = [(point["kl"], point["reward"]) for arm in arms for point in arm.curve]
        axis.scatter(*zip(*points), color=plt.cm.tab10(i), label=method, s=6, alpha=0.6)
    axis.set(xlabel="held-out KL to the reference", ylabel="held-out reward")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
