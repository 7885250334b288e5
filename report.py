"""What a run leaves behind: curves.csv, summary.md, curves.png, frontier.png, tokens.html and samples.md;
with --save-policy policies/<arm>, with --tensorboard tensorboard/<arm> (both written by the arm's process).

RLHF methods are compared on the reward-KL frontier (Ziegler et al. 2019; Gao et al. 2022): a
policy can raise the reward model's score by drifting from its reference, so every figure
here sits beside the held-out KL it was bought with. The record `Arm` carries one PPO run's
learning curve from run.py to this file; the report groups arms by their `kind` and `group`
fields, never by parsing names. It imports no stage, so run.py stays the algorithm.
"""

import csv
import html
import importlib.util
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

import numerics  # noqa: E402

KINDS = ("baseline", "trial", "confirm")
SAMPLING = ("temperature", "top_k", "top_p", "min_new_tokens", "max_new_tokens")  # how a policy samples


@dataclass
class Arm:
    """One PPO run from the SFT reference and its learning curve."""

    name: str
    """unique within a run: the file name of arms/<name>.json"""
    kind: str
    """"baseline", "trial" (a BO trial) or "confirm" (best weights or sparse again, at a fresh seed)"""
    group: str
    """what the arm is an instance of: the baseline's name, "trial", "bo-best" or "sparse" """
    weights: dict[str, float]
    """credit weights w_k on the simplex"""
    seed: int
    """seed of sampling and PPO"""
    kl_coef: float
    """the yardstick of the regularised objective J (run.objective): the run's --kl-coef"""
    curve: list[dict] = field(default_factory=list)
    """evaluations: {"iteration", "reward", "kl", "kl_k3", "train_kl"}, reward and KL held out"""
    seconds: float = 0.0
    """wall time of training and evaluation"""
    samples: list[dict] = field(default_factory=list)
    """the final policy's responses to samples.md's prompts: {"prompt", "response", "eos", "score", "kl"}"""

    @property
    def final(self) -> float:
        """Held-out reward, mean of the last two evaluations."""
        return float(np.mean([point["reward"] for point in self.curve[-2:]]))

    @property
    def final_kl(self) -> float:
        """Held-out sequence KL to the reference, mean of the last two evaluations."""
        return float(np.mean([point["kl"] for point in self.curve[-2:]]))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> "Arm":
        return cls(**payload)


def read_json(path: str):
    with open(path) as file:
        return json.load(file)


def write_json(path: str, payload) -> None:
    """Write to a temporary file, then rename: a crash never leaves a half-written result."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as file:
        json.dump(payload, file, indent=1)
    os.replace(path + ".tmp", path)


def reward_at_kl(curve: list[dict], kl: float) -> float | None:
    """Held-out reward where the trajectory first reaches `kl`, linear between evaluations.

    None when the trajectory never reaches that KL: the arm is not extrapolated.
    """
    for before, after in zip(curve, curve[1:]):
        if before["kl"] <= kl <= after["kl"]:
            span = after["kl"] - before["kl"]
            share = 0.0 if span == 0 else (kl - before["kl"]) / span
            return before["reward"] + share * (after["reward"] - before["reward"])
    return curve[0]["reward"] if curve and curve[0]["kl"] == kl else None


def matched_kl_rewards(arms: dict[str, Arm]) -> dict[str, float | None]:
    """Per arm: its held-out reward at the final held-out KL of sparse at the same seed.

    Sparse arms are the baseline "sparse" and the confirmation group "sparse"; an arm with no
    sparse run at its seed (a BO trial) or that never reaches that KL gets None.
    """
    sparse_kl = {arm.seed: arm.final_kl for arm in arms.values() if arm.group == "sparse"}
    return {
        name: reward_at_kl(arm.curve, sparse_kl[arm.seed]) if arm.seed in sparse_kl else None
        for name, arm in arms.items()
    }


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval over seeds (NaN half-width with n = 1)."""
    if len(values) < 2:
        return float(values[0]), math.nan
    half_width = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return float(np.mean(values)), float(half_width)


def mean_interval(values: list[float]) -> str:
    """ "mean ± half-width" of the 95% interval, or the single value with n = 1."""
    mean, half_width = interval(values)
    return f"{mean:+.2f} (n = 1)" if math.isnan(half_width) else f"{mean:+.2f} ± {half_width:.2f}"


def fidelity(credit: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two (B, T) credits pooled over the real tokens (mask (B, T) != 0)."""
    real = np.asarray(mask) != 0
    return float(np.corrcoef(np.asarray(credit)[real], np.asarray(truth)[real])[0, 1])


def fidelity_text(by_truth: dict | None) -> str:
    """ "0.92 / 0.71": fidelity against the Shapley truth / the lexicon, or "–" with no truth."""
    return " / ".join(f"{by_truth[t]:.2f}" for t in ("Shapley truth", "lexicon")) if by_truth else "–"


def number(value: float | None, fmt: str = "+.2f", missing: str = "–") -> str:
    return missing if value is None else format(value, fmt)


def weights_text(weights: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in weights.items() if v > 0.005)


def confirmation(arms: dict[str, Arm], matched: dict, objective) -> str:
    """Best weights against sparse over the fresh seeds: mean ± 95% interval of each figure,
    and of the paired difference (bo-best - sparse at the same seed); objective(arm) is J."""
    confirm = [arm for arm in arms.values() if arm.kind == "confirm"]
    pairs = {}
    for arm in confirm:
        pairs.setdefault(arm.seed, {})[arm.group] = arm
    pairs = {seed: pair for seed, pair in pairs.items() if {"bo-best", "sparse"} <= set(pair)}
    if not pairs:
        return ""
    lines = [
        "| confirm (fresh seeds) | seeds | final reward | held-out KL | J = reward - kl_coef KL "
        "| reward at sparse's KL |",
        "|---|---|---|---|---|---|",
    ]
    for group in ("bo-best", "sparse"):
        runs = [pair[group] for pair in pairs.values()]
        at_kl = [matched[arm.name] for arm in runs if matched[arm.name] is not None]
        lines.append(
            f"| {group} | {len(runs)} | {mean_interval([a.final for a in runs])} | "
            f"{mean_interval([a.final_kl for a in runs])} | {mean_interval([objective(a) for a in runs])} | "
            f"{mean_interval(at_kl) if at_kl else 'never reached'} |"
        )
    j_gap = [objective(pair["bo-best"]) - objective(pair["sparse"]) for pair in pairs.values()]
    kl_gap = [
        matched[pair["bo-best"].name] - matched[pair["sparse"].name]
        for pair in pairs.values()
        if matched[pair["bo-best"].name] is not None and matched[pair["sparse"].name] is not None
    ]
    lines.append(f"\nbo-best - sparse, paired by seed: J {mean_interval(j_gap)}; reward at sparse's KL ")
    lines[-1] += (
        f"{mean_interval(kl_gap)}." if kl_gap else "not measured (bo-best never reached sparse's KL)."
    )
    lines.append(f"\nOn J, {verdict(j_gap)}. At matched KL, {verdict(kl_gap) if kl_gap else 'no verdict'}.")
    return "\n".join(lines) + "\n"


def verdict(gaps: list[float]) -> str:
    """Whether bo-best and sparse are distinguishable, in words, from the paired gaps bo-best - sparse."""
    mean, half_width = interval(gaps)
    if math.isnan(half_width):
        return "one pair of seeds gives no interval, so no verdict"
    if abs(mean) <= half_width:
        return f"bo-best and sparse are not distinguishable on these {len(gaps)} seeds (the interval holds 0)"
    side = "ahead of" if mean > 0 else "behind"
    return f"bo-best is {side} sparse on these {len(gaps)} seeds (the 95% interval excludes 0)"


def summary_table(arms: dict[str, Arm], best_weights: dict, fidelity: dict, objective, smoke=False) -> str:
    """The results table; objective(arm, kind) is run.py's J, kind 'regularised' or 'auc'."""
    matched = matched_kl_rewards(arms)
    lines = [
        "| arm | weights | final reward | held-out KL | J | AUC | reward at sparse's KL "
        "| credit fidelity (Shapley / lexicon) | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sparse_seeds = {arm.seed for arm in arms.values() if arm.group == "sparse"}
    for name, arm in arms.items():
        at_kl = number(matched[name], missing="never" if arm.seed in sparse_seeds else "–")
        lines.append(
            f"| {name} | {weights_text(arm.weights)} | {arm.final:+.2f} | {arm.final_kl:.2f} | "
            f"{objective(arm, 'regularised'):+.2f} | {objective(arm, 'auc'):+.2f} | {at_kl} | "
            f"{fidelity_text(fidelity.get(name))} | {arm.seconds:.0f} |"
        )
    kl_coef = next(iter(arms.values())).kl_coef
    header = "## Results\n\n"
    if smoke:
        header += "**Smoke run (--quick): a few iterations to check the pipeline, not an experiment.**\n\n"
    return (
        header + "Final reward and held-out KL: mean held-out RM score, and mean sequence KL of the held-out "
        f"responses to the reference (k1), over the last two evaluations. J: mean of reward - {kl_coef} KL "
        "over the evaluations after the start. AUC: mean held-out reward over the same evaluations. "
        "Reward at sparse's KL: the arm's held-out reward, interpolated along its own trajectory, at the "
        "KL that sparse ends with at the same seed (never: it never got there). Credit fidelity: "
        "Pearson correlation of the arm's shaped reward r'_t with the true game's Shapley values / with "
        "the lexicon credit, over the tokens of SFT responses (RM and explainer together; the benchmark "
        "bench_attribution.py separates the two)."
        "\n\n"
        + "\n".join(lines)
        + f"\n\nBest BO weights: {weights_text(best_weights)}\n\n"
        + confirmation(arms, matched, lambda arm: objective(arm, "regularised"))
    )


def write_curves(out: str, arms: dict[str, Arm]) -> None:
    with open(os.path.join(out, "curves.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["arm", "kind", "group", "seed", "iteration", "reward", "kl", "kl_k3", "train_kl"])
        for name, arm in arms.items():
            for p in arm.curve:
                numbers = [f"{p[k]:.4f}" for k in ("reward", "kl", "kl_k3", "train_kl")]
                writer.writerow([name, arm.kind, arm.group, arm.seed, p["iteration"], *numbers])
    figure, axis = plt.subplots(figsize=(8, 5))
    plot_arms(axis, arms, x="iteration")
    axis.set(xlabel="PPO iteration", ylabel="held-out reward (RM score)", title="Learning curves")
    save(figure, axis, os.path.join(out, "curves.png"))
    figure, axis = plt.subplots(figsize=(8, 5))
    plot_arms(axis, arms, x="kl")
    axis.set(xlabel="held-out KL to the reference", ylabel="held-out reward (RM score)")
    axis.set_title("Reward-KL frontier: up and to the left is more KL-efficient")
    save(figure, axis, os.path.join(out, "frontier.png"))


def plot_arms(axis, arms: dict[str, Arm], x: str) -> None:
    """One line per arm, one colour per group (seeds of a group share it), BO trials in grey."""
    groups = sorted({arm.group for arm in arms.values() if arm.kind != "trial"})
    colours = {group: plt.cm.tab10(i % 10) for i, group in enumerate(groups)}
    labelled = set()
    for arm in arms.values():
        xs = [point[x] for point in arm.curve]
        ys = [point["reward"] for point in arm.curve]
        if arm.kind == "trial":
            label, style = "BO trials", {"color": "grey", "alpha": 0.4, "linewidth": 1}
        else:
            label = arm.group + (" (confirm seeds)" if arm.kind == "confirm" else "")
            style = {"color": colours[arm.group], "linewidth": 2 if arm.kind == "baseline" else 1}
            style["linestyle"] = "--" if arm.kind == "confirm" else "-"
        marker = "." if x == "kl" else None
        axis.plot(xs, ys, marker=marker, label=None if label in labelled else label, **style)
        labelled.add(label)


def save(figure, axis, path: str) -> None:
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def colour(value: float, scale: float) -> str:
    """Green for positive credit, red for negative, opacity by size relative to the row."""
    alpha = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    return f"rgba(0,150,0,{alpha:.2f})" if value >= 0 else f"rgba(210,0,0,{alpha:.2f})"


def write_tokens(out: str, credit: dict, arms: dict[str, Arm], n_examples: int = 8) -> None:
    """tokens.html: per example, the truths, then each baseline arm's credit and the best weights'."""
    rows = {**credit["truths"], **credit["credit"]}
    shown = [*credit["truths"], *(name for name, arm in arms.items() if arm.kind == "baseline"), "bo-best"]
    parts = [
        "<html><head><meta charset='utf-8'><title>Token credit</title><style>"
        "body{font-family:sans-serif} td{padding:2px 5px} td.m{font-weight:bold;text-align:right}"
        "</style></head><body><h1>The credit each method gives each response token</h1>"
        "<p>Green: positive reward, red: negative; opacity relative to the row's largest value. "
        "Hover a token for its value. Two truths (embedded task only): <i>Shapley truth</i>, the exact "
        "Shapley values of the task's sentiment game, what SHAP on a perfect reward model returns (for "
        "<i>not great</i>: all the negative credit on <i>not</i>, none on <i>great</i>); <i>lexicon</i>, "
        "each adjective its signed strength and <i>not</i> nothing, what a person would point at.</p>"
    ]
    for i, tokens in enumerate(credit["tokens"][:n_examples]):
        parts.append(f"<h3>{html.escape(credit['prompts'][i])} …</h3><table>")
        for method in [m for m in dict.fromkeys(shown) if m in rows]:
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


def write_samples(out: str, arms: dict[str, Arm], reference: list[dict]) -> None:
    """samples.md: per held-out prompt, what the SFT reference and each arm's final policy write."""
    policies = {"SFT reference": reference, **{name: arm.samples for name, arm in arms.items()}}
    lines = [
        "# What each policy writes\n\nThe same held-out prompts, each response sampled with one seed (so "
        "rows compare), with its RM score f(x, y) and its sequence KL to the reference (k1). A response "
        "that ends with `[EOS]` stopped itself; `…`: cut at --max-new-tokens.\n",
        "| policy | ends with EOS | mean RM score | mean KL |\n|---|---|---|---|",
    ]
    for name, rows in policies.items():
        if rows:
            ended, score, kl = (sum(row[k] for row in rows) for k in ("eos", "score", "kl"))
            lines.append(
                f"| {name} | {ended} of {len(rows)} | {score / len(rows):+.2f} | {kl / len(rows):.2f} |"
            )
    for i, prompt in enumerate(row["prompt"] for row in reference):
        lines.append(
            f"\n## {i + 1}. {cell(prompt)} …\n\n| policy | response | RM score | KL |\n|---|---|---|---|"
        )
        for name, rows in policies.items():
            if i < len(rows) and rows[i]["prompt"] == prompt:  # an arm from before samples: none
                row = rows[i]
                ending = " `[EOS]`" if row["eos"] else " …"
                lines.append(
                    f"| {name} | {cell(row['response'])}{ending} | {row['score']:+.2f} | {row['kl']:.2f} |"
                )
    with open(os.path.join(out, "samples.md"), "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def cell(text: str) -> str:
    """Text as one Markdown table cell: no line break, no column bar."""
    return " ".join(text.split()).replace("|", "\\|") or "(empty)"


def has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class Scalars:
    """--tensorboard: one TensorBoard run per arm, <out>/tensorboard/<arm>, written by the process that
    trains it (torch.utils.tensorboard); without it, nothing. add(group, values, step): group/name tags."""

    def __init__(self, folder: str, on: bool):
        self.writer = None
        if on:
            from torch.utils.tensorboard import SummaryWriter

            shutil.rmtree(folder, ignore_errors=True)  # an interrupted attempt's events: a second curve
            self.writer = SummaryWriter(folder)

    def add(self, group: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items() if self.writer else ():
            self.writer.add_scalar(f"{group}/{name}", value, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def save_policy(folder: str, policy, tokenizer, config) -> None:
    """--save-policy: the policy and its tokenizer, loadable with AutoModelForCausalLM.from_pretrained;
    its generation config samples as PPO did (the SAMPLING fields of `config`, a PPOConfig)."""
    from transformers import GenerationConfig
    from transformers.utils import logging

    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # one bar per arm's save would say nothing
    try:
        policy.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")}
        sampling = {name: getattr(config, name) for name in SAMPLING}
        GenerationConfig(do_sample=True, **sampling, **ids).save_pretrained(folder)
    finally:
        if bars:
            logging.enable_progress_bar()


def write_all(out, arms, best_weights, credit, reference, objective, saved=(), smoke=False) -> str:
    """Write every artifact; return the summary (also saved as summary.md), `saved` the policies kept.

    arms {name: Arm}, best_weights {component: w}, credit: run.credit_examples', reference: the SFT
    policy's samples, objective(arm, kind): run.py's J. summary.md ends with the CPU numerics
    fingerprint of config.json; the summary returned also says, where it is not the one
    docs/summary.md was made under, what that means for the table.
    """
    summary = summary_table(arms, best_weights, credit["fidelity"], objective, smoke)
    if saved:
        summary += f"\nPolicies saved (save_pretrained, with the tokenizer): {', '.join(saved)}\n"
    config = os.path.join(out, "config.json")
    fingerprint = read_json(config).get("numerics_fingerprint") if os.path.exists(config) else None
    if fingerprint:
        summary += f"\n{numerics.text(fingerprint)}\n"
    with open(os.path.join(out, "summary.md"), "w") as file:
        file.write(summary)
    write_curves(out, arms)
    write_tokens(out, credit, arms)
    write_samples(out, arms, reference)
    note = fingerprint and numerics.versus_docs(fingerprint)
    return summary + f"\n{note}\n" if note else summary
