"""The embedded task: tokenizer, ground truth, reward model, SFT policy, cache and loaders."""

import concurrent.futures
import os
import random

import numpy as np
import pytest
import torch
import transformers

import language
import reward_attribution as ra
import scoring
import task

SMALL = dict(n_reviews=400, n_train_prompts=8, n_val_prompts=4, rm_steps=3, sft_steps=3)


def test_tokenizer_round_trip_and_offsets():
    tokenizer = task.make_tokenizer("[CLS]", "right")
    text = "the plot was not great but the acting was superb ."
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc["input_ids"][0] == tokenizer.cls_token_id
    assert tokenizer.decode(enc["input_ids"], skip_special_tokens=True) == text
    words = [text[start:end] for start, end in enc["offset_mapping"][1:]]
    assert words == text.split()
    assert tokenizer("the qwerty plot")["input_ids"][2] == tokenizer.unk_token_id


@torch.no_grad()
def test_exact_shapley_of_the_rm_tracks_the_true_game(embedded_task):
    """A regression test of the RM build: it must have learnt the game, not only the labels."""
    tokenizer = embedded_task.policy_tokenizer
    prompts = embedded_task.val_prompts[:16]
    encoded = tokenizer(prompts, padding=True, return_tensors="pt")
    torch.manual_seed(0)
    output = embedded_task.policy.generate(
        **encoded, do_sample=True, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id
    )
    response_ids = output[:, encoded["input_ids"].shape[1] :]  # (B, T)
    is_eos = (response_ids == tokenizer.eos_token_id).long()
    response_mask = (is_eos.cumsum(1) - is_eos == 0).long()  # up to and including the first EOS

    def reward_fn(prompt_texts, responses):
        return scoring.score(
            embedded_task.reward_model, embedded_task.reward_tokenizer, prompt_texts, responses
        )

    config = ra.AttributionConfig(shap_backend="exact")
    phi, _ = ra.attribute(
        "shap", tokenizer, encoded["input_ids"], response_ids, response_mask, reward_fn, config
    )
    truth = torch.zeros(response_mask.shape)
    for i, (prompt, row, n) in enumerate(zip(prompts, response_ids.tolist(), response_mask.sum(1).tolist())):
        truth[i, :n] = torch.tensor(
            language.true_shapley_credit(prompt, tokenizer.convert_ids_to_tokens(row[:n]))
        )
    real = response_mask.bool()
    assert np.corrcoef(phi[real].numpy(), truth[real].numpy())[0, 1] >= 0.9


def test_vocabulary_size_and_demonstrations(embedded_task):
    assert 240 <= len(language.VOCABULARY) <= 260
    for prompt in embedded_task.val_prompts[:50]:
        demonstration = embedded_task.demonstrations[prompt]
        assert demonstration.startswith(" ") and demonstration.endswith(" .")
        words = (prompt + demonstration).split()
        assert language.token_scores(words).sum() > 0, "demonstrations are positive reviews"
    assert not set(embedded_task.train_prompts) & set(embedded_task.val_prompts)


def held_out_reviews(n=2000, seed=12345):
    rng = random.Random(seed)
    return [language.random_review(rng) for _ in range(n)]


def test_reward_model_accuracy_including_negation(embedded_task):
    reviews = held_out_reviews()
    labels = torch.tensor([language.token_scores(words).sum() > 0 for words in reviews])
    negated = torch.tensor(["not" in words for words in reviews])
    scores = scoring.score(
        embedded_task.reward_model,
        embedded_task.reward_tokenizer,
        [""] * len(reviews),
        [" ".join(words) for words in reviews],
    )
    correct = ((scores > 0) == labels).float()
    assert correct.mean() >= 0.98
    assert negated.sum() > 300 and correct[negated].mean() >= 0.98


def test_sft_policy_writes_well_formed_reviews(embedded_task):
    tokenizer = embedded_task.policy_tokenizer
    enc = tokenizer(embedded_task.val_prompts[:128], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = embedded_task.policy.generate(
        **enc,
        do_sample=True,
        max_new_tokens=30,
        top_k=0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    well_formed = 0
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        if tokenizer.eos_token_id in row:
            end = row.index(tokenizer.eos_token_id)
            well_formed += end > 0 and row[end - 1] == tokenizer.convert_tokens_to_ids(".")
    assert well_formed / len(out) >= 0.9


def test_same_seed_same_weights_and_cache_reload(tmp_path, monkeypatch):
    first = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "a"), **SMALL))
    # The caller's thread count must not reach the training: float sums change with it.
    seen_threads, train_policy = [], task.train_policy
    monkeypatch.setattr(
        task,
        "train_policy",
        lambda *args: seen_threads.append(torch.get_num_threads()) or train_policy(*args),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        second = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "b"), **SMALL))
    finally:
        torch.set_num_threads(threads)
    assert seen_threads == [1]
    assert_same_task(first, second)
    other_seed = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "a"), seed=1, **SMALL))
    assert not torch.equal(other_seed.policy.transformer.wte.weight, first.policy.transformer.wte.weight)
    assert len(os.listdir(tmp_path / "a")) == 2  # one folder per setting, nothing half-written


def test_the_policy_trained_in_a_second_process_is_the_one_trained_here(tmp_path, monkeypatch):
    # The child gets the generators' states after the RM's weights and data: the same draws.
    submitted = []

    class Pool(concurrent.futures.ProcessPoolExecutor):  # records what goes to another process
        def submit(self, fn, *args):
            submitted.append(fn.__name__)
            return super().submit(fn, *args)

    here = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "a"), **SMALL))
    monkeypatch.setattr(task.concurrent.futures, "ProcessPoolExecutor", Pool)
    beside = task.build_task(task.TaskConfig(cache_dir=str(tmp_path / "b"), build_processes=2, **SMALL))
    assert submitted == ["train_policy_from"]
    assert_same_task(here, beside)


def assert_same_task(first: task.Task, second: task.Task) -> None:
    """Both models equal bit for bit, and the prompts drawn after them."""
    for a, b in [(first.policy, second.policy), (first.reward_model, second.reward_model)]:
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    assert (first.train_prompts, first.val_prompts) == (second.train_prompts, second.val_prompts)
    assert first.demonstrations == second.demonstrations


def test_save_pretrained_round_trip_through_the_real_loader(tmp_path, embedded_task):
    embedded_task.policy.save_pretrained(tmp_path / "policy")
    embedded_task.policy_tokenizer.save_pretrained(tmp_path / "policy")
    embedded_task.reward_model.save_pretrained(tmp_path / "rm")
    embedded_task.reward_tokenizer.save_pretrained(tmp_path / "rm")
    loaded = task.build_task(
        task.TaskConfig(
            policy=str(tmp_path / "policy"),
            reward_model=str(tmp_path / "rm"),
            cache_dir=str(tmp_path / "unused"),
            **SMALL,
        )
    )
    assert not loaded.embedded and loaded.policy_tokenizer.padding_side == "left"
    assert loaded.reward_model.config._attn_implementation == "eager"
    ids = torch.tensor([[2, 10, 20, 30]])
    assert torch.equal(loaded.policy(ids).logits, embedded_task.policy(ids).logits)
    text = ["the acting was not dull ."]
    assert torch.equal(
        scoring.score(loaded.reward_model, loaded.reward_tokenizer, text, [""]),
        scoring.score(embedded_task.reward_model, embedded_task.reward_tokenizer, text, [""]),
    )


def test_ends_reviews_is_p_eos_after_each_review_as_scored_alone():
    tokenizer = task.make_tokenizer("[BOS]", "left")
    size = dict(vocab_size=len(language.VOCABULARY), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    policy = transformers.GPT2LMHeadModel(transformers.GPT2Config(**size)).eval()
    eos = tokenizer.eos_token_id
    texts = ("a fine film .", "this film was not dull at all .")
    encoded = [tokenizer(text)["input_ids"] + [eos] for text in texts]  # two lengths: one row is padded
    by_hand = []
    for row in encoded:  # each review alone, no padding: p(EOS) after its last word, the `.`
        logits = policy(input_ids=torch.tensor([row])).logits[0]  # (L, V)
        by_hand.append(logits[len(row) - 2].softmax(-1)[eos].item())
    assert task.ends_reviews(policy, encoded, tokenizer) == pytest.approx(np.mean(by_hand), rel=1e-5)


@pytest.mark.parametrize("checks, runs, expected", [([0.1, 0.9], 3, 2), ([0.9], 3, 1), ([0.1, 0.1], 2, 2)])
def test_sft_runs_again_only_while_the_policy_does_not_end_reviews(monkeypatch, checks, runs, expected):
    rng = random.Random(0)
    reviews = [language.random_review(rng) for _ in range(80)]
    seen = []
    monkeypatch.setattr(task, "ends_reviews", lambda *_: seen.append(1) or checks[len(seen) - 1])
    config = task.TaskConfig(sft_steps=1, sft_runs=runs)
    task.train_policy(reviews, task.make_tokenizer("[BOS]", "left"), config, random.Random(0))
    assert len(seen) == expected  # one check after each run; it stops at the first that passes
