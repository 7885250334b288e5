"""The embedded task against its targets, measured from nothing in a fresh cache folder.

    python benchmarks/bench_task.py [--threads N]

Prints: build time from nothing (target < 60 s on 2 cores), RM accuracy on held-out reviews
and on the negated ones (>= 98%), the share of well-formed SFT samples (`.` then EOS,
>= 90%), and the cached rebuild time (< 5 s).
"""

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli  # noqa: E402

cli.pin_numerics()  # run.py's CPU numerics (--numerics), before torch loads

import torch  # noqa: E402

import language  # noqa: E402
import scoring  # noqa: E402
import task  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numerics", default="native", help="CPU kernels, as run.py's --numerics (native)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        built = task.build_task(task.TaskConfig(cache_dir=cache))
        build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        task.build_task(task.TaskConfig(cache_dir=cache))
        cached_seconds = time.perf_counter() - start

    rng = random.Random(2024)
    reviews = [language.random_review(rng) for _ in range(4000)]
    labels = torch.tensor([language.token_scores(words).sum() > 0 for words in reviews])
    negated = torch.tensor(["not" in words for words in reviews])
    scores = scoring.score(
        built.reward_model,
        built.reward_tokenizer,
        [""] * len(reviews),
        [" ".join(words) for words in reviews],
    )
    correct = ((scores > 0) == labels).float()

    tokenizer = built.policy_tokenizer
    enc = tokenizer(built.val_prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = built.policy.generate(
        **enc,
        do_sample=True,
        top_k=0,
        max_new_tokens=30,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    full_stop, well_formed = tokenizer.convert_tokens_to_ids("."), 0
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        end = row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else 0
        well_formed += end > 0 and row[end - 1] == full_stop

    print(f"vocabulary                 {len(language.VOCABULARY)} words")
    print(f"build from nothing         {build_seconds:6.1f} s    (target < 60 s)")
    print(f"cached rebuild             {cached_seconds:6.2f} s    (target < 5 s)")
    print(f"RM accuracy, held out      {correct.mean():6.2%}    (n = {len(reviews)}, target >= 98%)")
    print(
        f"RM accuracy, negated       {correct[negated].mean():6.2%}    "
        f"(n = {int(negated.sum())}, target >= 98%)"
    )
    print(f"SFT samples well-formed    {well_formed / len(out):6.2%}    (n = {len(out)}, target >= 90%)")


if __name__ == "__main__":
    main()
