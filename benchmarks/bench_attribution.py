"""How faithful, how cheap: every attribution method on 64 responses of the embedded task.

    python benchmarks/bench_attribution.py

For each method and backend it prints the correlation (pooled over all real response
tokens) with the ground-truth token credit of the embedded language and with exact
Shapley values, the RM rows spent per response and the wall time per response. Attention
is non-negative, so it is scored in its signed, reward-unit form alpha_t R (the ABC credit).
Targets (issue 4): batched SHAP >= 0.95 with exact at <= 4 T rows and >= 10x faster than the
shap package; batched LIME >= 0.9 with the lime package and >= 10x faster.
"""

import os
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import reward_attribution as ra  # noqa: E402
import shaping  # noqa: E402
import task as task_module  # noqa: E402


@dataclass
class Args:
    n_responses: int = 64
    """responses sampled from the SFT policy on the first validation prompts"""
    max_new_tokens: int = 12
    """response length cap (EOS included), small enough for exact Shapley (2^T rows)"""
    seed: int = 0
    """seed of the sampling and of every attribution method"""
    repeats: int = 2
    """timed runs per method; the fastest counts (the machine may be shared)"""
    cache_dir: str = os.path.join(ROOT, ".cache", "task")
    """where the embedded task is built once and read back"""


@torch.no_grad()
def sample_responses(task, prompts: list[str], max_new_tokens: int, seed: int):
    """Sampled responses: left-padded prompt ids, response ids, mask up to and including EOS."""
    torch.manual_seed(seed)
    tokenizer = task.policy_tokenizer
    encoded = tokenizer(prompts, padding=True, return_tensors="pt")
    output = task.policy.generate(
        **encoded,
        do_sample=True,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    response_ids = output[:, encoded["input_ids"].shape[1] :]  # (B, T)
    is_eos = (response_ids == tokenizer.eos_token_id).long()
    response_mask = (is_eos.cumsum(1) - is_eos == 0).long()  # no EOS strictly before t
    return encoded["input_ids"], response_ids, response_mask


def correlation(a: torch.Tensor, b: torch.Tensor, response_mask: torch.Tensor) -> float:
    """Pearson correlation of two (B, T) attributions pooled over all real response tokens."""
    real = response_mask.bool()
    return float(np.corrcoef(a[real].double().numpy(), b[real].double().numpy())[0, 1])


def main(args: Args) -> None:
    start = time.time()
    task = task_module.build_task(task_module.TaskConfig(cache_dir=args.cache_dir))
    prompts = task.val_prompts[: args.n_responses]
    ids = sample_responses(task, prompts, args.max_new_tokens, args.seed)
    response_mask = ids[2]
    B, lengths = len(prompts), response_mask.sum(1)
    print(
        f"task ready in {time.time() - start:.1f} s; {B} responses, {lengths.float().mean():.1f} tokens on "
        f"average (max {int(lengths.max())}), {int((lengths < args.max_new_tokens).sum())} end with EOS"
    )

    def reward_fn(prompt_texts, response_texts):
        return task_module.score(task.reward_model, task.reward_tokenizer, prompt_texts, response_texts)

    # 1. sequence rewards, and the ground truth of the embedded language per response token
    prompt_texts, pieces = ra.response_texts(task.policy_tokenizer, *ids)
    scores = reward_fn(prompt_texts, ["".join(row) for row in pieces])  # (B,)
    words = [
        task.policy_tokenizer.convert_ids_to_tokens(row[:n])
        for row, n in zip(ids[1].tolist(), lengths.tolist())
    ]
    truth = torch.zeros(response_mask.shape)
    for i, (prompt, row) in enumerate(zip(prompts, words)):
        truth[i, : len(row)] = torch.as_tensor(
            task_module.true_token_credit(prompt, row), dtype=torch.float32
        )

    # 2. every method and backend, best of `repeats` timed runs (shap's numba compilation warmed up first)
    runs = [
        ("shap", "exact", dict(shap_backend="exact")),
        ("shap", "batched", dict(shap_backend="batched")),
        ("shap", "library", dict(shap_backend="library")),
        ("lime", "batched", dict(lime_backend="batched")),
        ("lime", "library", dict(lime_backend="library")),
        ("attention", "rm", dict()),
    ]
    ra.attribute(
        "shap",
        task.policy_tokenizer,
        *[x[:2] for x in ids],
        reward_fn,
        ra.AttributionConfig(shap_backend="library"),
    )
    results = {}
    for method, backend, options in runs:
        config = ra.AttributionConfig(seed=args.seed, **options)
        seconds = []
        for _ in range(args.repeats):
            tic = time.perf_counter()
            values, rows = ra.attribute(
                method,
                task.policy_tokenizer,
                *ids,
                reward_fn,
                config,
                reward_model=task.reward_model,
                reward_tokenizer=task.reward_tokenizer,
            )
            seconds.append(time.perf_counter() - tic)
        results[method, backend] = values, rows, min(seconds)

    # 3. fidelity and cost of each attribution (attention in its signed form alpha_t R)
    components = shaping.credit_components(
        scores,
        response_mask,
        {
            "attention": results["attention", "rm"][0],
            "shap": results["shap", "batched"][0],
            "lime": results["lime", "batched"][0],
        },
    )
    exact = results["shap", "exact"][0]
    print(
        f"\n{'method':<10} {'backend':<8} {'corr truth':>10} {'corr exact':>10} {'rows/resp':>10} "
        f"{'rows/T':>7} {'ms/resp':>8}"
    )
    for (method, backend), (values, rows, seconds) in results.items():
        if method == "attention":
            method, backend, values = "attention", "alpha*R", components["attention"]
        print(
            f"{method:<10} {backend:<8} {correlation(values, truth, response_mask):>10.3f} "
            f"{correlation(values, exact, response_mask):>10.3f} {rows / B:>10.1f} "
            f"{rows / lengths.sum().item():>7.2f} {1000 * seconds / B:>8.2f}"
        )

    # 4. what PPO receives: each credit component (reward units, sums to R) against the truth
    print("\ncredit component (sums to R)   corr truth")
    for name, credit in components.items():
        print(f"{name:<30} {correlation(credit, truth, response_mask):>10.3f}")

    # 5. the targets of issue 4
    shap_fidelity = correlation(results["shap", "batched"][0], exact, response_mask)
    library_fidelity = correlation(results["shap", "library"][0], exact, response_mask)
    lime_agreement = correlation(results["lime", "batched"][0], results["lime", "library"][0], response_mask)
    shap_speedup = results["shap", "library"][2] / results["shap", "batched"][2]
    lime_speedup = results["lime", "library"][2] / results["lime", "batched"][2]
    shap_rows = results["shap", "batched"][1] / lengths.sum().item()
    print("\ntargets")
    for what, value, met in [
        ("batched SHAP vs exact Shapley, correlation >= 0.95", f"{shap_fidelity:.3f}", shap_fidelity >= 0.95),
        ("batched SHAP rows per token <= 4", f"{shap_rows:.2f}", shap_rows <= 4),
        (
            "batched SHAP fidelity >= shap package's",
            f"{shap_fidelity:.3f} vs {library_fidelity:.3f}",
            shap_fidelity >= library_fidelity - 1e-3,
        ),
        ("speed-up of batched SHAP over the shap package >= 10x", f"{shap_speedup:.1f}x", shap_speedup >= 10),
        (
            "batched LIME vs the lime package, correlation >= 0.9",
            f"{lime_agreement:.3f}",
            lime_agreement >= 0.9,
        ),
        ("speed-up of batched LIME over the lime package >= 10x", f"{lime_speedup:.1f}x", lime_speedup >= 10),
    ]:
        print(f"  {what:<56} {value:>16}  {'met' if met else 'NOT met'}")
    print(f"total {time.time() - start:.1f} s")


if __name__ == "__main__":
    main(Args())
