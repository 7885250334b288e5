"""Benchmark: where one PPO iteration spends its time on the embedded task, and how close it
comes to the unavoidable cost.

An iteration (ppo.PPOTrainer.rollout + update, batch 64, sparse reward from scoring.score on
the decoded responses) is split into generation, the two no-grad log-prob forwards
(policy with values, reference) and the update (GAE, PPO epochs). The floor is measured
separately, right after each iteration on the same tokens: bare forward+backward passes of
the policy over the same (minibatch, P+T-1) inputs the PPO minibatches feed (the last
response token predicts nothing), as many as the PPO epochs run. Then

    overhead = iteration time / (generation + forward/backward floor)

and 1.0 would mean PPO costs nothing beyond sampling and the gradient passes it cannot
avoid. The reward model's scoring is the caller's work and is reported beside it.

    python benchmarks/bench_ppo.py --iterations 8 --threads 1
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # project modules

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import torch  # noqa: E402

import estimators  # noqa: E402
import ppo  # noqa: E402
import sampling  # noqa: E402
import scoring  # noqa: E402
import task  # noqa: E402


def floor_seconds(policy, rollout: ppo.Rollout, config: ppo.PPOConfig) -> float:
    """Bare forward+backward passes over the minibatches one update needs; no optimiser step."""
    input_ids = torch.cat([rollout.prompt_ids, rollout.response_ids[:, :-1]], dim=1)  # (B, P+T-1)
    attention_mask = torch.cat([rollout.prompt_mask, rollout.response_mask[:, :-1]], dim=1)
    position_ids = sampling.left_padded_positions(attention_mask)
    start = ppo.clock(input_ids.device)
    for _ in range(config.ppo_epochs):
        for row in range(0, len(input_ids), config.minibatch_size):
            rows = slice(row, row + config.minibatch_size)
            logits = policy(
                input_ids=input_ids[rows],
                attention_mask=attention_mask[rows],
                position_ids=position_ids[rows],
            ).logits
            logits.mean().backward()
    seconds = ppo.clock(input_ids.device) - start
    policy.zero_grad(set_to_none=True)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numerics", default="native", help="CPU kernels, as run.py's --numerics (native)")
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations")
    parser.add_argument("--batch", type=int, default=64, help="prompts per iteration (run.py's default)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (a tiny model gains little from more, and on "
        "shared cores extra threads make timings erratic)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if torch.cuda.is_available():
        print("a GPU is present: this benchmark measures the CPU path only; skipped")
        return

    the_task = task.build_task(task.TaskConfig())
    tokenizer = the_task.policy_tokenizer
    config = ppo.PPOConfig(device="cpu")
    trainer = ppo.PPOTrainer(the_task.policy, config, tokenizer.pad_token_id, tokenizer.eos_token_id)

    phases = {}  # phase name -> seconds per timed iteration
    for iteration in range(args.warmup + args.iterations):
        first = iteration * args.batch % len(the_task.train_prompts)
        prompts = the_task.train_prompts[first : first + args.batch]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True)

        start = time.perf_counter()
        rollout = trainer.rollout(encoded["input_ids"], encoded["attention_mask"])
        rolled_out = time.perf_counter()
        responses = [
            " " + text for text in tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
        ]
        scores = scoring.score(the_task.reward_model, the_task.reward_tokenizer, prompts, responses)
        token_rewards = estimators.sparse_token_rewards(scores, rollout.response_mask)
        scored = time.perf_counter()
        stats = trainer.update(rollout, token_rewards, scores)
        ppo_seconds = (rolled_out - start) + (time.perf_counter() - scored)
        floor = floor_seconds(trainer.policy, rollout, config)

        if iteration >= args.warmup:
            timings = {
                "generation": stats["time_generation"],
                "forward": stats["time_forward"],
                "update": stats["time_update"],
                "iteration": ppo_seconds,
                "floor": floor,
                "reward": scored - rolled_out,
            }
            for name, seconds in timings.items():
                phases.setdefault(name, []).append(seconds)
            print(
                f"iteration {iteration - args.warmup}: score {stats['score']:+.2f}  "
                f"kl {stats['kl']:.3f}  length {stats['response_length']:.1f}  "
                f"{ppo_seconds * 1000:.0f} ms"
            )

    mean = {name: statistics.mean(values) * 1000 for name, values in phases.items()}
    median = {name: statistics.median(values) * 1000 for name, values in phases.items()}
    print(
        f"\nbatch {args.batch}, minibatch {config.minibatch_size}, "
        f"{config.ppo_epochs} epochs, {config.min_new_tokens}-{config.max_new_tokens} "
        f"new tokens, {args.threads} thread(s), "
        f"{args.iterations} iterations after {args.warmup} warm-up"
    )
    print(f"{'phase':<34}{'mean ms':>9}{'median ms':>11}")
    rows = [
        ("generation", "generation"),
        ("log-prob forwards (policy + ref)", "forward"),
        ("update (GAE + PPO epochs)", "update"),
        ("PPO iteration (sum of the above)", "iteration"),
        ("floor: bare forward+backward", "floor"),
        ("reward model (caller, not PPO)", "reward"),
    ]
    for label, name in rows:
        print(f"{label:<34}{mean[name]:>9.1f}{median[name]:>11.1f}")
    rest = mean["iteration"] - mean["generation"] - mean["floor"]
    print(f"{'rest (iteration - gen. - floor)':<34}{rest:>9.1f}")
    overhead = sum(phases["iteration"]) / (sum(phases["generation"]) + sum(phases["floor"]))
    print(f"\noverhead = iteration / (generation + floor) = {overhead:.2f}   (target <= 1.3)")


if __name__ == "__main__":
    main()
