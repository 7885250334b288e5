"""Benchmark: one PPO iteration and its credit at GPT-2-small scale, built offline.

The models are built from configs with random weights, no download:

    --size gpt2   policy GPT-2 small (12 layers, 768 wide, 12 heads, vocab 50257), RM of
                  DistilBERT base shape (6 layers, 768 wide, vocab 30522, 2 labels, eager attention)
    --size tiny   the same vocabularies, 2 layers x 64 wide for both (21 min on 2 CPU cores at load 10)

Tokenizers: the embedded task's word-level tokenizer (task.py) padded with filler words
`w<i>` up to each model's vocabulary size, so every id the policy samples decodes to a word;
the RM reads a policy filler word beyond its own 30522 words as [UNK]. Prompts are the
embedded task's. A random policy seldom samples EOS, so most responses run to max_new_tokens.

Per iteration (ppo.PPOTrainer.rollout + update, sparse reward from the RM) the time is split
into generation, the two log-prob forwards, the update, the RM score, and the credit of each
method through reward_attribution.attribute (SHAP batched, LIME batched, attention). The
overhead ratio is bench_ppo.py's:

    overhead = iteration time / (generation + forward/backward floor)

with its floor (bench_ppo.floor_seconds). Tokens per second = real response tokens / time.
Peak memory: torch.cuda.max_memory_allocated on CUDA, the process's peak RSS on CPU.

    python benchmarks/bench_scale.py --size tiny --device cpu
    python benchmarks/bench_scale.py --size gpt2 --device cuda --bf16
"""

import argparse
import os
import random
import resource
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # project modules

import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics, before torch and numpy load

import torch  # noqa: E402
from bench_ppo import floor_seconds  # noqa: E402
from transformers import (  # noqa: E402
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

import coalitions  # noqa: E402
import estimators  # noqa: E402
import language  # noqa: E402
import ppo  # noqa: E402
import reward_attribution  # noqa: E402
import scoring  # noqa: E402
import task  # noqa: E402

POLICY_VOCAB, RM_VOCAB = 50257, 30522
SIZES = {  # (layers, width, heads) of the policy and of the RM
    "tiny": ((2, 64, 2), (2, 64, 2)),
    "gpt2": ((12, 768, 12), (6, 768, 12)),
}


def padded_tokenizer(vocab_size: int, first_token: str, padding_side: str) -> PreTrainedTokenizerFast:
    """task.make_tokenizer's word-level tokenizer, its vocabulary padded with `w<i>` to vocab_size."""
    words = language.VOCABULARY + [f"w{i}" for i in range(vocab_size - len(language.VOCABULARY))]
    return task.make_tokenizer(first_token, padding_side, words)


def build_models(size: str, device: torch.device):
    """Random-weight policy and RM of the chosen shape, with their tokenizers."""
    (p_layers, p_width, p_heads), (r_layers, r_width, r_heads) = SIZES[size]
    tokenizer = padded_tokenizer(POLICY_VOCAB, "[BOS]", "left")
    rm_tokenizer = padded_tokenizer(RM_VOCAB, "[CLS]", "right")
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=POLICY_VOCAB,
            n_layer=p_layers,
            n_embd=p_width,
            n_head=p_heads,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    rm_config = DistilBertConfig(
        vocab_size=RM_VOCAB,
        n_layers=r_layers,
        dim=r_width,
        n_heads=r_heads,
        hidden_dim=4 * r_width,
        num_labels=2,
        pad_token_id=rm_tokenizer.pad_token_id,
    )
    rm_config._attn_implementation = "eager"  # attention credit reads the attention maps
    reward_model = DistilBertForSequenceClassification(rm_config).to(device).eval()
    return policy, tokenizer, reward_model, rm_tokenizer


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux: kilobytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numerics", default="native", help="CPU kernels, as run.py's --numerics (native)")
    parser.add_argument("--size", choices=tuple(SIZES), help="default: gpt2 on CUDA, tiny on CPU")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA only)")
    parser.add_argument("--batch", type=int, default=64, help="prompts per PPO iteration")
    parser.add_argument("--min-new-tokens", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    args = parser.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else args.device if args.device != "auto" else "cpu")
    if args.bf16 and device.type != "cuda":
        sys.exit(f"--bf16 needs a CUDA device (bfloat16 autocast is only used on CUDA); got {device}")
    size = args.size or ("gpt2" if device.type == "cuda" else "tiny")
    torch.set_num_threads(args.threads)

    policy, tokenizer, reward_model, rm_tokenizer = build_models(size, device)
    config = ppo.PPOConfig(
        min_new_tokens=args.min_new_tokens,
        max_new_tokens=args.max_new_tokens,
        device=str(device),
        bf16=args.bf16,
    )
    trainer = ppo.PPOTrainer(policy, config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    prompts_pool, _ = task.make_prompts(args.batch * (args.warmup + args.iterations), random.Random(0))

    def reward_fn(prompts, responses):
        return scoring.score(reward_model, rm_tokenizer, prompts, responses)

    phases, rows_per_response, tokens = {}, {}, []
    for iteration in range(args.warmup + args.iterations):
        prompts = prompts_pool[iteration * args.batch : (iteration + 1) * args.batch]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True)
        prompt_ids = encoded["input_ids"]
        start = ppo.clock(device)
        rollout = trainer.rollout(prompt_ids, encoded["attention_mask"])
        rolled_out = ppo.clock(device)
        response_ids, response_mask = rollout.response_ids.cpu(), rollout.response_mask.cpu()
        texts, pieces = coalitions.response_texts(tokenizer, prompt_ids, response_ids, response_mask)
        scores = reward_fn(texts, ["".join(row) for row in pieces])
        scored = ppo.clock(device)
        timings = {"reward": scored - rolled_out}
        for method in reward_attribution.METHODS:
            begin = ppo.clock(device)
            batch = (tokenizer, prompt_ids, response_ids, response_mask, reward_fn)
            rm = dict(reward_model=reward_model, reward_tokenizer=rm_tokenizer)
            _, rows = reward_attribution.attribute(method, *batch, **rm)
            timings[method] = ppo.clock(device) - begin
            rows_per_response.setdefault(method, []).append(rows / args.batch)
        resumed = ppo.clock(device)
        stats = trainer.update(rollout, estimators.sparse_token_rewards(scores, response_mask), scores)
        timings["iteration"] = (rolled_out - start) + (ppo.clock(device) - resumed)
        with trainer.autocast():
            timings["floor"] = floor_seconds(trainer.policy, rollout, config)
        timings.update(
            generation=stats["time_generation"], forward=stats["time_forward"], update=stats["time_update"]
        )
        if iteration >= args.warmup:
            tokens.append(int(response_mask.sum()))
            for name, seconds in timings.items():
                phases.setdefault(name, []).append(seconds)
        print(
            f"iteration {iteration}{' (warm-up)' if iteration < args.warmup else ''}: "
            f"length {stats['response_length']:.1f}  PPO {timings['iteration']:.2f} s  "
            f"credit {sum(timings[m] for m in reward_attribution.METHODS):.2f} s",
            flush=True,
        )

    total = {name: sum(values) for name, values in phases.items()}
    credit = sum(total[m] for m in reward_attribution.METHODS)
    print(
        f"\nsize {size} on {device}{' bf16' if args.bf16 else ''}, batch {args.batch}, "
        f"minibatch {config.minibatch_size}, {config.ppo_epochs} epochs, "
        f"{args.min_new_tokens}-{args.max_new_tokens} new tokens, {args.threads} thread(s), "
        f"{args.iterations} iterations after {args.warmup} warm-up"
    )
    print(f"{'phase':<36}{'mean s':>9}{'median s':>10}{'RM rows/resp':>14}")
    labels = [
        ("generation", "generation"),
        ("log-prob forwards (policy + ref)", "forward"),
        ("update (GAE + PPO epochs)", "update"),
        ("PPO iteration (sum of the above)", "iteration"),
        ("floor: bare forward+backward", "floor"),
        ("RM score (sparse reward)", "reward"),
        ("credit: SHAP batched", "shap"),
        ("credit: LIME batched", "lime"),
        ("credit: attention", "attention"),
    ]
    for label, name in labels:
        rows = f"{statistics.mean(rows_per_response[name]):>14.1f}" if name in rows_per_response else ""
        values = phases[name]
        print(f"{label:<36}{statistics.mean(values):>9.2f}{statistics.median(values):>10.2f}{rows}")
    print(f"\nresponse tokens per iteration: {statistics.mean(tokens):.0f}")
    print(f"tokens/s, PPO iteration only: {sum(tokens) / total['iteration']:.0f}")
    print(
        f"tokens/s, PPO + RM score + all three credits: "
        f"{sum(tokens) / (total['iteration'] + total['reward'] + credit):.0f}"
    )
    print(f"peak memory: {peak_memory_mb(device):.0f} MiB ({'CUDA allocated' if cuda else 'CPU RSS'})")
    overhead = total["iteration"] / (total["generation"] + total["floor"])
    print(f"overhead = iteration / (generation + floor) = {overhead:.2f}   (bench_ppo.py's ratio)")


if __name__ == "__main__":
    main()
