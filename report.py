"""What a run leaves behind: curves.csv, summary.md, curves.png and tokens.html.

Plain presentation of plain data (each arm's learning curve, the credit each method gives
each token); it imports no stage, so run.py stays the algorithm.
"""

import csv
import html
import os

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SHOWN = ("truth", "sparse", "uniform", "abc", "shap", "lime", "bo-best")  # rows of tokens.html


def first_reach(curve: list[dict], target: float) -> int | str:
    """The first evaluated iteration whose held-out reward is >= target, or "never"."""
    return next((point["iteration"] for point in curve if point["reward"] >= target), "never")


def is_sparse(arm: dict) -> bool:
    return arm["arm"] == "sparse" or arm["arm"].startswith("sparse-seed")


def reach_iterations(arms: dict) -> dict:
    """Per arm: iterations until it first reaches the final reward of sparse at the same seed
    ("never" if it does not; None where no sparse run shares its seed, e.g. BO trials)."""
    sparse_final = {arm["seed"]: arm["final"] for arm in arms.values() if is_sparse(arm)}
    return {
        name: first_reach(arm["curve"], sparse_final[arm["seed"]]) if arm["seed"] in sparse_final else None
        for name, arm in arms.items()
    }


def iterations_needed(arm: dict, reached: int | str) -> int:
    """Iterations an arm needed to reach the target; one that never did counts as its whole run."""
    return arm["curve"][-1]["iteration"] if reached == "never" else reached


def confirmation(arms: dict, reach: dict) -> str:
    """Best weights vs sparse over the confirmation seeds: iterations to sparse's final reward.

    An arm that never gets there counts as the full run (so the ratio is, if anything, kind
    to it); the ratio is of the means over seeds.
    """
    groups = {"bo-best": [], "sparse": []}
    for name, arm in arms.items():
        for group in groups:
            if name.startswith(group + "-seed"):
                groups[group].append((arm, iterations_needed(arm, reach[name])))
    if not groups["bo-best"] or not groups["sparse"]:
        return ""
    lines = [
        "| confirm (fresh seeds) | seeds | final reward | AUC | iterations to sparse's final |",
        "|---|---|---|---|---|",
    ]
    mean_iterations = {}
    for group, runs in groups.items():
        finals = np.array([arm["final"] for arm, _ in runs])
        aucs = np.array([arm["auc"] for arm, _ in runs])
        mean_iterations[group] = np.mean([n for _, n in runs])
        lines.append(
            f"| {group} | {len(runs)} | {finals.mean():+.2f} ± {finals.std():.2f} | "
            f"{aucs.mean():+.2f} | {mean_iterations[group]:.1f} |"
        )
    ratio = mean_iterations["bo-best"] / max(mean_iterations["sparse"], 1e-9)
    return "\n".join(lines) + f"\n\nIterations ratio bo-best / sparse = {ratio:.2f} (target <= 0.6).\n"


def fidelity(credit: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two (B, T) credits pooled over the real tokens (mask (B, T) != 0)."""
    real = np.asarray(mask) != 0
    return float(np.corrcoef(np.asarray(credit)[real], np.asarray(truth)[real])[0, 1])


def summary_table(arms: dict, best_weights: dict, fidelity: dict) -> str:
    reach = reach_iterations(arms)
    weights = lambda w: ", ".join(f"{k} {v:.2f}" for k, v in w.items() if v > 0.005)  # noqa: E731
    number = lambda x, fmt: "–" if x is None else format(x, fmt)  # noqa: E731
    lines = [
        "| arm | weights | final reward | AUC | iterations to sparse's final | KL | credit fidelity "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in arms.items():
        lines.append(
            f"| {name} | {weights(arm['weights'])} | {arm['final']:+.2f} | {arm['auc']:+.2f} | "
            f"{number(reach[name], '')} | {arm['kl']:.2f} | {number(fidelity.get(name), '.2f')} | "
            f"{arm['seconds']:.0f} |"
        )
    return (
        "## Results\n\nFinal reward: mean held-out RM score over the last two evaluations. AUC: mean "
        "held-out reward over the evaluations after the start (the BO objective J). Credit fidelity: "
        "correlation of r'_t with the ground-truth token credit on SFT responses.\n\n"
        + "\n".join(lines)
        + f"\n\nBest BO weights: {weights(best_weights)}\n\n"
        + confirmation(arms, reach)
    )


def write_curves(out: str, arms: dict) -> None:
    with open(os.path.join(out, "curves.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["arm", "seed", "iteration", "reward", "kl"])
        for name, arm in arms.items():
            for point in arm["curve"]:
                writer.writerow(
                    [name, arm["seed"], point["iteration"], f"{point['reward']:.4f}", f"{point['kl']:.4f}"]
                )
    figure, axis = plt.subplots(figsize=(8, 5))
    labelled = set()
    for name, arm in arms.items():
        x = [p["iteration"] for p in arm["curve"]]
        y = [p["reward"] for p in arm["curve"]]
        if name.startswith("trial-"):
            group, style = "BO trials", {"color": "grey", "alpha": 0.4, "linewidth": 1}
        elif "-seed" in name:
            group = name.split("-seed")[0] + " (confirm seeds)"
            style = {"linestyle": "--", "alpha": 0.6, "color": "black" if is_sparse(arm) else "tab:red"}
        else:
            group, style = name, {"linewidth": 2}
        axis.plot(x, y, label=None if group in labelled else group, **style)
        labelled.add(group)
    axis.set(xlabel="PPO iteration", ylabel="held-out reward (RM score)", title="Learning curves")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(out, "curves.png"), dpi=110)
    plt.close(figure)


def colour(value: float, scale: float) -> str:
    """Green for positive credit, red for negative, opacity by size relative to the row."""
    alpha = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    return f"rgba(0,150,0,{alpha:.2f})" if value >= 0 else f"rgba(210,0,0,{alpha:.2f})"


def write_tokens(out: str, credit: dict, n_examples: int = 8) -> None:
    rows = {"truth": credit["truth"], **credit["credit"]} if credit["truth"] is not None else credit["credit"]
    parts = [
        "<html><head><meta charset='utf-8'><title>Token credit</title><style>"
        "body{font-family:sans-serif} td{padding:2px 5px} td.m{font-weight:bold;text-align:right}"
        "</style></head><body><h1>The credit each method gives each response token</h1>"
        "<p>Green: positive reward, red: negative; opacity relative to the row's largest value. "
        "Hover a token for its value. <i>truth</i> is the embedded task's ground-truth credit.</p>"
    ]
    for i, tokens in enumerate(credit["tokens"][:n_examples]):
        parts.append(f"<h3>{html.escape(credit['prompts'][i])} …</h3><table>")
        for method in [m for m in SHOWN if m in rows]:
            values = rows[method][i][: len(tokens)]
            scale = max(abs(v) for v in values) if values else 0.0
            cells = "".join(
                f"<td style='background:{colour(v, scale)}' title='{v:+.3f}'>{html.escape(t)}</td>"
                for t, v in zip(tokens, values)
            )
            parts.append(f"<tr><td class='m'>{method}</td>{cells}</tr>")
        parts.append("</table>")
    with open(os.path.join(out, "tokens.html"), "w", encoding="utf-8") as file:
        file.write("\n".join(parts) + "</body></html>\n")


def write_all(out: str, arms: dict, best_weights: dict, credit: dict) -> str:
    """Write every artifact; return the summary (also saved as summary.md)."""
    summary = summary_table(arms, best_weights, credit["fidelity"])
    with open(os.path.join(out, "summary.md"), "w") as file:
        file.write(summary)
    write_curves(out, arms)
    write_tokens(out, credit)
    return summary
