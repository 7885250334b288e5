"""How faithful, how cheap: every attribution method on 64 responses of the embedded task.

    python benchmarks/bench_attribution.py

Fidelity is a Pearson correlation pooled over all real response tokens, in three figures:

    explainer fidelity   credit vs the exact Shapley values of the RM (is the estimator exact?)
    RM fidelity          exact Shapley of the RM vs `language.true_shapley_credit`, the exact Shapley
                         values of the game the RM was trained to regress (has the RM learnt it?)
    end-to-end fidelity  credit vs `true_shapley_credit`, and vs the lexicon credit
                         `language.true_token_credit` (each adjective's signed value; `not` gets 0)

each measured on the attribution itself (phi, beta, and attention in its signed, reward-unit
form alpha_t R) and on the shaped credit component of `shaping.credit_components`, where the
residual f(x, all masked) lands on the last token. Cost: RM rows per response and per token,
wall time per response. Targets: batched SHAP vs the true game's Shapley >= 0.95, batched LIME
>= 0.9 (end-to-end, attribution itself), batched SHAP at <= 4 RM rows per token; attention is
reported. A missed target prints whether the RM or the estimator is the cause.
"""

import os
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

import coalitions  # noqa: E402
import language  # noqa: E402
import reward_attribution as ra  # noqa: E402
import scoring  # noqa: E402
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
        return scoring.score(task.reward_model, task.reward_tokenizer, prompt_texts, response_texts)

    # 1. sequence rewards, and the two truths of the embedded language per response token
    prompt_texts, pieces = coalitions.response_texts(task.policy_tokenizer, *ids)
    scores = reward_fn(prompt_texts, ["".join(row) for row in pieces])  # (B,)
    words = [
        task.policy_tokenizer.convert_ids_to_tokens(row[:n])
        for row, n in zip(ids[1].tolist(), lengths.tolist())
    ]
    game, lexicon = torch.zeros(response_mask.shape), torch.zeros(response_mask.shape)
    for i, (prompt, row) in enumerate(zip(prompts, words)):
        game[i, : len(row)] = torch.tensor(language.true_shapley_credit(prompt, row))
        lexicon[i, : len(row)] = torch.tensor(language.true_token_credit(prompt, row))
    apart = correlation(game, lexicon, response_mask)
    print(
        f"the true game's Shapley values vs the lexicon credit: {apart:.3f} (two definitions of the credit)"
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

    # 3. fidelity of the attribution itself (attention in its signed form alpha_t R) and of the
    #    shaped credit component PPO receives (phi, beta completed by the residual on the last token)
    attention = {"attention": results["attention", "rm"][0]}
    components = shaping.credit_components(scores, response_mask, attention)  # sparse, uniform, alpha_t R
    exact = results["shap", "exact"][0]
    exact_component = shaping.credit_components(scores, response_mask, {"shap": exact})["shap"]
    fidelity = {}  # (what, form) -> (explainer, end-to-end vs the game, vs the lexicon)
    for (method, backend), (values, _, _) in results.items():
        what = "attention alpha*R" if method == "attention" else f"{method} {backend}"
        signed = components["attention"] if method == "attention" else values
        component = shaping.credit_components(scores, response_mask, {method: values})[method]
        for form, credit, reference in (
            ("attribution", signed, exact),
            ("component", component, exact_component),
        ):
            fidelity[what, form] = tuple(
                correlation(credit, other, response_mask) for other in (reference, game, lexicon)
            )
    rm_fidelity = {
        form: correlation(reference, game, response_mask)
        for form, reference in (("attribution", exact), ("component", exact_component))
    }
    print(f"\nRM fidelity, exact Shapley of the RM vs the true game's: {rm_fidelity['attribution']:.3f}")
    print(f"  the same as credit components (residual on the last token): {rm_fidelity['component']:.3f}")
    tokens = lengths.sum().item()
    for form in ("attribution", "component"):
        print(
            f"\n{form:<18} {'explainer':>9} {'end-to-end':>10} {'vs lexicon':>10}"
            + (f" {'rows/resp':>9} {'rows/token':>10} {'ms/resp':>8}" if form == "attribution" else "")
        )
        for (method, backend), (_, rows, seconds) in results.items():
            what = "attention alpha*R" if method == "attention" else f"{method} {backend}"
            explainer, end_to_end, vs_lexicon = fidelity[what, form]
            cost = f" {rows / B:>9.1f} {rows / tokens:>10.2f} {1000 * seconds / B:>8.2f}"
            print(
                f"{what:<18} {explainer:>9.3f} {end_to_end:>10.3f} {vs_lexicon:>10.3f}"
                + (cost if form == "attribution" else "")
            )
        if form == "component":
            for name in ("sparse", "uniform"):
                print(
                    f"{name:<18} {'':>9} {correlation(components[name], game, response_mask):>10.3f} "
                    f"{correlation(components[name], lexicon, response_mask):>10.3f}"
                )

    # 4. the targets: end-to-end on the attribution itself; a miss says whether the RM or the estimator
    shap_rows = results["shap", "batched"][1] / tokens
    print("\ntargets (end-to-end: attribution vs the true game's Shapley values)")
    for what, key, target in (("batched SHAP", "shap batched", 0.95), ("batched LIME", "lime batched", 0.9)):
        explainer, end_to_end, _ = fidelity[key, "attribution"]
        met = end_to_end >= target
        print(f"  {what + f' >= {target}':<56} {end_to_end:>16.3f}  {'met' if met else 'NOT met'}")
        if not met:
            cause = "the RM" if rm_fidelity["attribution"] < target else "the estimator"
            print(
                f"    cause: {cause} (RM fidelity {rm_fidelity['attribution']:.3f}, "
                f"explainer fidelity {explainer:.3f}, both against {target})"
            )
    met = shap_rows <= 4
    print(f"  {'batched SHAP RM rows per token <= 4':<56} {shap_rows:>16.2f}  {'met' if met else 'NOT met'}")
    reported = fidelity["attention alpha*R", "attribution"][1]
    print(f"  {'attention alpha*R (reported, no target)':<56} {reported:>16.3f}")
    print(f"total {time.time() - start:.1f} s")


if __name__ == "__main__":
    main(Args())
