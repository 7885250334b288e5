"""Benchmark: what a policy spends its KL on, sparse credit against dense credit at matched KL.

Trains sparse and a dense arm (default: the BO's best weights of a default run) with run.py's
own code at one seed, keeps the dense policy at every held-out evaluation, and compares
sparse's final policy with the dense policy whose held-out KL is closest to sparse's final KL:

    reward, KL        held-out RM score and sequence KL to the reference (k1), as run.py measures
    KL on adjectives  the share of sum_t log(pi / pi_ref) that falls on sentiment adjectives
    words             response length, adjectives per response, share of strength-3 adjectives,
                      share of negative adjectives, responses that repeat an adjective,
                      responses that end well (`. [EOS]`)

on the embedded task's held-out prompts, sampled with one fixed generator for every policy.

    python benchmarks/bench_drift.py [--seed 1] [--weights FILE] [--out runs/bench_drift]
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import torch  # noqa: E402

import checks  # noqa: E402
import credit  # noqa: E402
import language  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import sampling  # noqa: E402
import shaping  # noqa: E402

DENSE_WEIGHTS = {"shap": 0.69, "lime": 0.31}  # the BO best of a default run (--objective regularised)


@torch.no_grad()
def describe(policy, trainer, setup, prompts: list[str], seed: int) -> dict[str, float]:
    """The measures of the module docstring for one policy, on `prompts`."""
    enc = setup.tokenizer(prompts, return_tensors="pt", padding=True)
    prompt_ids, prompt_mask = enc["input_ids"], enc["attention_mask"]
    generator = torch.Generator().manual_seed(seed)
    config, pad, eos = trainer.config, setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    response_ids, mask = sampling.sample(
        policy, prompt_ids, prompt_mask, config, pad, eos, generator=generator
    )
    batch = (prompt_ids, prompt_mask, response_ids, mask)
    logprobs, _, _ = sampling.response_logprobs(policy, *batch, **trainer.drawn_as)  # (B, T)
    ref_logprobs, _, _ = sampling.response_logprobs(trainer.ref_policy, *batch, **trainer.drawn_as)
    log_ratio = (logprobs - ref_logprobs) * mask  # (B, T)
    words = [
        setup.tokenizer.convert_ids_to_tokens(row[: int(n)]) for row, n in zip(response_ids, mask.sum(1))
    ]
    is_adjective = torch.zeros_like(log_ratio, dtype=torch.bool)  # (B, T)
    for i, row in enumerate(words):
        is_adjective[i, : len(row)] = torch.tensor([w in language.POLARITY for w in row])
    adjectives = [[w for w in row if w in language.POLARITY] for row in words]
    all_adjectives = [w for row in adjectives for w in row]
    texts = [" " + " ".join(w for w in row if w not in language.SPECIAL_TOKENS) for row in words]
    total_kl = log_ratio.sum().item()  # 0 for the reference itself
    return {
        "reward": setup.reward_fn(prompts, texts).mean().item(),
        "KL": log_ratio.sum(1).mean().item(),
        "KL on adjectives": (log_ratio * is_adjective).sum().item() / total_kl if total_kl else float("nan"),
        "length": mask.sum(1).double().mean().item(),
        "adjectives per response": len(all_adjectives) / len(words),
        "strength-3 adjectives": sum(abs(language.POLARITY[w]) == 3 for w in all_adjectives)
        / len(all_adjectives),
        "negative adjectives": sum(language.POLARITY[w] < 0 for w in all_adjectives) / len(all_adjectives),
        "repeat an adjective": sum(len(set(row)) < len(row) for row in adjectives) / len(words),
        "end well": sum(row[-2:] == [".", "[EOS]"] for row in words) / len(words),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numerics", default="native", help="CPU kernels, as run.py's --numerics (native)")
    parser.add_argument("--seed", type=int, default=1, help="seed of both arms (a confirmation seed)")
    parser.add_argument("--weights", help=f"JSON file of the dense arm's weights (default: {DENSE_WEIGHTS})")
    parser.add_argument("--out", default="runs/bench_drift", help="folder of the two arms' files")
    args, run_argv = parser.parse_known_args()
    weights = report.read_json(args.weights) if args.weights else DENSE_WEIGHTS
    try:
        shaping.check_weights(weights)
    except (ValueError, AttributeError) as error:
        parser.error(f"--weights: {error}")
    options = checks.parse_options(["--out", args.out, *run_argv])
    torch.set_num_threads(options.threads)
    setup, start = run.build_setup(options), time.time()
    run.outputs.claim_output_folder(options)

    trainers, kept = [], []  # every trainer run.train_arm builds; (KL, policy) at each evaluation
    build_trainer, evaluate = run.ppo.PPOTrainer, run.evaluation.evaluate

    def build_and_keep(*trainer_args, **trainer_kwargs):
        trainers.append(build_trainer(*trainer_args, **trainer_kwargs))
        return trainers[-1]

    def evaluate_and_keep(trainer, *evaluate_args):
        point = evaluate(trainer, *evaluate_args)
        kept.append((point["kl"], copy.deepcopy(trainer.policy)))
        return point

    run.ppo.PPOTrainer, run.evaluation.evaluate = build_and_keep, evaluate_and_keep
    sparse_arm = run.Arm("sparse", "baseline", "sparse", {"sparse": 1.0}, args.seed, options.kl_coef)
    sparse = run.train_arm(sparse_arm, credit.ON_THE_RM, setup, options)
    sparse_trainer = trainers[-1]
    kept.clear()
    dense_arm = run.Arm("dense", "baseline", "dense", weights, args.seed, options.kl_coef)
    dense = run.train_arm(dense_arm, credit.ON_THE_RM, setup, options)
    kl, matched_policy = min(kept, key=lambda point: abs(point[0] - sparse.final_kl))

    prompts = setup.task.val_prompts
    columns = {
        "SFT reference": describe(sparse_trainer.ref_policy, sparse_trainer, setup, prompts, args.seed),
        "sparse, final": describe(sparse_trainer.policy, sparse_trainer, setup, prompts, args.seed),
        "dense, matched KL": describe(matched_policy, trainers[-1], setup, prompts, args.seed),
        "dense, final": describe(trainers[-1].policy, trainers[-1], setup, prompts, args.seed),
    }
    print(f"\nseed {args.seed}, {options.iterations} iterations; dense = {report.weights_text(weights)}")
    print(
        f"sparse's final held-out KL {sparse.final_kl:.2f}; the dense evaluation closest to it: KL {kl:.2f}"
    )
    print(f"{len(prompts)} held-out prompts, one sample each; {time.time() - start:.0f} s\n")
    print(f"{'':<26}" + "".join(f"{name:>19}" for name in columns))
    for measure in columns["SFT reference"]:
        print(f"{measure:<26}" + "".join(f"{column[measure]:>19.3f}" for column in columns.values()))
    print(
        f"\nfinal held-out reward (mean of the last two evaluations): sparse {sparse.final:.2f}, "
        f"dense {dense.final:.2f}"
    )


if __name__ == "__main__":
    main()
