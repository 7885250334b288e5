"""What SHAP and LIME credit costs against the PPO update it feeds, before and after the fast path.

    python benchmarks/bench_credit.py            # all three parts, about 2 minutes on one core
    python benchmarks/bench_credit.py --part short

    before  the text path: coalition texts tokenized by the RM's tokenizer, the eager RM
    after   coalitions built as RM ids (coalitions.TokenReward), the RM's SDPA view
            (scoring.sdpa_view), the AttributionConfig defaults

1. short: one batch of 64 SFT responses of 8-16 new tokens on the embedded task, 1 thread: the
   rollout, the PPO update, SHAP and LIME before and after, each split into the RM's forward
   passes, the tokenizer (before) or the id batches (after), and the rest (masks, solves). The
   runs alternate and the fastest of --repeats counts, so the ratios come from one sitting.
   Target: SHAP + LIME after <= 0.75 x the PPO update.
2. long: 90-110 new tokens, batch 16, on the sized embedded task (`run.py --reviews sized`: trained
   models that write and score reviews of several sentences). Target: SHAP after <= 1.5 x the update.
   Then SHAP's fidelity there by permutations K: explainer (against a K = 64 estimate, as exact Shapley
   of the RM cannot be enumerated at this length) and end-to-end (against the true game's values).
3. fidelity: SHAP permutations K and LIME samples S against exact Shapley, on 64 SFT responses of
   8-14 tokens (exact Shapley scores 2^T coalitions; T <= 14). Pearson correlation pooled over real
   tokens, mean over 3 seeds: explainer (vs the RM's exact Shapley values) and end-to-end (vs the
   true game's, `language.true_shapley_credit`, bench_attribution.py's target: SHAP >= 0.95, LIME >= 0.9),
   with the RM rows per response each costs.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

import coalitions  # noqa: E402
import estimators  # noqa: E402
import ppo  # noqa: E402
import reward_attribution as ra  # noqa: E402
import sampling  # noqa: E402
import scoring  # noqa: E402
import task as task_module  # noqa: E402

BEFORE = dict(
    shap_permutations=4, lime_samples=128
)  # the defaults run.py used before (cli: --lime-samples 128)


class Stopwatch:
    """Seconds spent in named parts; `forward` is timed by hooks on the RM modules."""

    def __init__(self, *models):
        self.seconds = {}
        for model in models:
            model.register_forward_pre_hook(lambda *_: self.start("forward"))
            model.register_forward_hook(lambda *_: self.stop("forward"))

    def start(self, name):
        self.seconds.setdefault(name, [0.0, None])[1] = time.perf_counter()

    def stop(self, name):
        entry = self.seconds[name]
        entry[0] += time.perf_counter() - entry[1]

    def take(self) -> dict[str, float]:
        totals = {name: total for name, (total, _) in self.seconds.items()}
        self.seconds = {}
        return totals

    def wrap(self, name, fn):
        def timed(*args):
            self.start(name)
            try:
                return fn(*args)
            finally:
                self.stop(name)

        return timed


def paths(reward_model, reward_tokenizer, watch):
    """The reward function of each path: texts through the eager RM, ids through its SDPA view."""
    view = scoring.sdpa_view(reward_model)
    watch.__init__(reward_model, view)
    text_fn = watch.wrap("reward_fn", lambda p, r: scoring.score(reward_model, reward_tokenizer, p, r))
    ids_fn = watch.wrap("reward_fn", lambda i, m: scoring.score_ids(view, i, m))
    limit = reward_model.config.max_position_embeddings
    return {"before": text_fn, "after": coalitions.TokenReward(reward_tokenizer, ids_fn, limit)}


def time_credit(prompts, pieces, reward, config, watch) -> dict[str, float]:
    """Seconds of SHAP and LIME on one batch, split into forward, tokenizer / id batches and the rest."""
    split = {}
    for method in ("shap", "lime"):
        watch.take()
        start = time.perf_counter()
        ra.attribute_texts(method, prompts, pieces, reward, config)
        total, parts = time.perf_counter() - start, watch.take()
        forward = parts.get("forward", 0.0)
        split[method] = dict(total=total, forward=forward, encode=parts["reward_fn"] - forward)
        split[method]["rest"] = total - parts["reward_fn"]
    return split


def sample_batch(trainer, tokenizer, prompts):
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    start = time.perf_counter()
    rollout = trainer.rollout(encoded["input_ids"], encoded["attention_mask"])
    return rollout, time.perf_counter() - start


def time_update(trainer, rollout) -> float:
    scores = torch.randn(len(rollout.response_ids))  # the update's cost does not depend on the reward
    start = time.perf_counter()
    trainer.update(rollout, estimators.sparse_token_rewards(scores, rollout.response_mask), scores)
    return time.perf_counter() - start


def profile(policy, tokenizer, reward_model, reward_tokenizer, prompts, ppo_config, repeats, methods):
    """Fastest of `repeats` alternating runs: rollout, update, and the credit of each path."""
    watch = Stopwatch()
    rewards = paths(reward_model, reward_tokenizer, watch)
    configs = {"before": ra.AttributionConfig(**BEFORE), "after": ra.AttributionConfig()}
    trainer = ppo.PPOTrainer(policy, ppo_config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    runs = []
    for _ in range(repeats):
        rollout, rollout_seconds = sample_batch(trainer, tokenizer, prompts)
        on_cpu = [x.cpu() for x in (rollout.prompt_ids, rollout.response_ids, rollout.response_mask)]
        prompt_texts, pieces = coalitions.response_texts(tokenizer, *on_cpu)
        run = {"rollout": rollout_seconds, "tokens": rollout.response_mask.sum(1).float().mean().item()}
        for path in ("before", "after"):
            credit = time_credit(prompt_texts, pieces, rewards[path], configs[path], watch)
            run[path] = {method: credit[method] for method in methods}
        run["update"] = time_update(trainer, rollout)
        runs.append(run)
    best = {name: min(run[name] for run in runs) for name in ("rollout", "update")}
    for path in ("before", "after"):
        best[path] = {
            method: {part: min(run[path][method][part] for run in runs) for part in runs[0][path][method]}
            for method in methods
        }
    best["tokens"] = statistics.mean(run["tokens"] for run in runs)
    return best, configs


def report(best, configs, methods, target, what):
    update = best["update"]
    print(
        f"rollout {best['rollout']:.3f} s, PPO update {update:.3f} s, {best['tokens']:.1f} tokens a response"
    )
    print(f"{'':<8}{'method':<7}{'total s':>9}{'forward':>9}{'encode':>9}{'rest':>8}{'x update':>10}")
    for path in ("before", "after"):
        config = configs[path]
        label = f"K={config.shap_permutations} S={config.lime_samples}"
        for method in methods:
            parts = best[path][method]
            print(
                f"{path:<8}{method:<7}{parts['total']:>9.3f}{parts['forward']:>9.3f}{parts['encode']:>9.3f}"
                f"{parts['rest']:>8.3f}{parts['total'] / update:>10.2f}   {label}"
            )
    ratio = {path: sum(best[path][m]["total"] for m in methods) / update for path in ("before", "after")}
    speedup = ratio["before"] / ratio["after"]
    met = "met" if ratio["after"] <= target else "NOT met"
    print(
        f"{what}: before {ratio['before']:.2f} x the update, after {ratio['after']:.2f} x "
        f"({speedup:.1f}x faster); target <= {target}: {met}"
    )


def part_short(args):
    the_task = task_module.build_task(task_module.TaskConfig(cache_dir=args.cache_dir))
    prompts = the_task.train_prompts[:64]
    config = ppo.PPOConfig(device="cpu", min_new_tokens=8, max_new_tokens=16)
    print("\n1. short: batch 64, 8-16 new tokens, the embedded task (trained models)")
    models = (the_task.policy, the_task.policy_tokenizer, the_task.reward_model, the_task.reward_tokenizer)
    best, configs = profile(*models, prompts, config, args.repeats, ("shap", "lime"))
    report(best, configs, ("shap", "lime"), 0.75, "SHAP + LIME")


def part_long(args):
    the_task = task_module.build_task(
        task_module.TaskConfig(cache_dir=args.cache_dir, response_tokens=(90, 110))
    )
    print("\n2. long: batch 16, 90-110 new tokens, the sized embedded task (run.py --reviews sized: reviews")
    print("   of several sentences, trained models; built once, about 6 minutes)")
    config = ppo.PPOConfig(device="cpu", min_new_tokens=90, max_new_tokens=110)
    prompts = the_task.train_prompts[:16]
    models = (the_task.policy, the_task.policy_tokenizer, the_task.reward_model, the_task.reward_tokenizer)
    best, configs = profile(*models, prompts, config, args.repeats, ("shap",))
    report(best, configs, ("shap",), 1.5, "SHAP")
    torch.manual_seed(0)
    tokenizer = the_task.policy_tokenizer
    encoded = tokenizer(the_task.val_prompts[:32], padding=True, return_tensors="pt")
    ids, mask = sampling.sample(
        the_task.policy,
        encoded["input_ids"],
        encoded["attention_mask"],
        config,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
    )
    reward = paths(the_task.reward_model, the_task.reward_tokenizer, Stopwatch())["after"]
    prompt_texts, pieces = coalitions.response_texts(tokenizer, encoded["input_ids"], ids, mask)
    game = task_module.true_credit(the_task, "true_shapley", the_task.val_prompts[:32], ids, mask)  # (B, T)
    reference, _ = padded_shap(
        prompt_texts, pieces, reward, ra.AttributionConfig(seed=99, shap_permutations=64), mask
    )
    print("   fidelity of SHAP on the RM, 32 SFT responses, mean of 3 seeds (worst): explainer against")
    print("   a K = 64 estimate (exact Shapley of the RM cannot be enumerated at this length), end-to-end")
    print("   against the true game's Shapley values")
    for k in (1, 2, 4, 8, 16):
        figures = []
        for seed in range(3):
            explainer = ra.AttributionConfig(seed=seed, shap_permutations=k)
            values, rows = padded_shap(prompt_texts, pieces, reward, explainer, mask)
            fits = correlation(values, reference, mask), correlation(values, game, mask)
            figures.append((rows / len(prompt_texts), *fits))
        (rows, explainer, end_to_end), worst = np.mean(figures, 0), np.min(figures, 0)
        print(
            f"   SHAP K = {k:>2}: {rows:6.1f} RM rows per response, explainer {explainer:.3f} "
            f"({worst[1]:.3f}), end-to-end {end_to_end:.3f} ({worst[2]:.3f})"
        )


def padded_shap(prompts, pieces, reward, config, mask) -> tuple[torch.Tensor, int]:
    """SHAP values (B, T) on the response mask's columns, and the RM rows they took."""
    values, rows = ra.attribute_texts("shap", prompts, pieces, reward, config)
    return torch.nn.functional.pad(values, (0, mask.shape[1] - values.shape[1])), rows


def correlation(a, b, mask) -> float:
    real = mask.bool()
    return float(np.corrcoef(a[real].double().numpy(), b[real].double().numpy())[0, 1])


def part_fidelity(args):
    the_task = task_module.build_task(task_module.TaskConfig(cache_dir=args.cache_dir))
    prompts = the_task.val_prompts[:64]
    torch.manual_seed(0)  # sampled as bench_attribution.py samples, here 8-14 new tokens
    tokenizer = the_task.policy_tokenizer
    encoded = tokenizer(prompts, padding=True, return_tensors="pt")
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    output = the_task.policy.generate(
        **encoded, do_sample=True, min_new_tokens=8, max_new_tokens=14, **special
    )
    response_ids = output[:, encoded["input_ids"].shape[1] :]
    is_eos = (response_ids == the_task.policy_tokenizer.eos_token_id).long()
    mask = (is_eos.cumsum(1) - is_eos == 0).long()
    batch = (encoded["input_ids"], response_ids, mask)
    lengths = mask.sum(1)
    reward = paths(the_task.reward_model, the_task.reward_tokenizer, Stopwatch())["after"]
    prompt_texts, pieces = coalitions.response_texts(the_task.policy_tokenizer, *batch)
    exact, _ = ra.attribute_texts(
        "shap", prompt_texts, pieces, reward, ra.AttributionConfig(shap_backend="exact")
    )
    exact = torch.nn.functional.pad(exact, (0, mask.shape[1] - exact.shape[1]))
    game = task_module.true_credit(the_task, "true_shapley", prompts, response_ids, mask)  # (B, T)
    spread = f"{lengths.float().mean():.1f} tokens on average ({int(lengths.min())}-{int(lengths.max())})"
    rm = correlation(exact, game, mask)
    print(
        f"\n3. fidelity: 64 SFT responses, {spread}; RM fidelity (its exact Shapley vs the game's) {rm:.3f}"
    )
    print(f"{'':<22}{'mean of 3 seeds':^23}{'worst seed':^25}")
    print(
        f"{'method':<6}{'n':>5}{'rows/resp':>11}{'explainer':>11}{'end-to-end':>12}"
        f"{'explainer':>13}{'end-to-end':>12}"
    )
    grid = [("shap", "shap_permutations", k) for k in (1, 2, 4, 6, 8, 12, 16)]
    grid += [("lime", "lime_samples", s) for s in (16, 24, 32, 48, 64, 96, 128, 256)]
    for method, field, n in grid:
        figures = []
        for seed in range(3):
            config = ra.AttributionConfig(seed=seed, **{field: n})
            values, rows = ra.attribute_texts(method, prompt_texts, pieces, reward, config)
            values = torch.nn.functional.pad(values, (0, mask.shape[1] - values.shape[1]))
            figures.append(
                (rows / len(prompts), correlation(values, exact, mask), correlation(values, game, mask))
            )
        rows, explainer, end_to_end = np.mean(figures, 0)
        worst = np.min(figures, 0)
        print(
            f"{method:<6}{n:>5}{rows:>11.1f}{explainer:>11.3f}{end_to_end:>12.3f}"
            f"{worst[1]:>13.3f}{worst[2]:>12.3f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numerics", default="native", help="CPU kernels, as run.py's --numerics (native)")
    parser.add_argument("--part", choices=("short", "long", "fidelity", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed runs; the fastest counts")
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, ".cache", "task"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if torch.cuda.is_available():
        print("a GPU is present: this benchmark times the CPU path (device='cpu')")
    for part in ("short", "long", "fidelity"):
        if args.part in (part, "all"):
            globals()[f"part_{part}"](args)


if __name__ == "__main__":
    main()
