"""Tests for sampling.py: the KV-cached sampler and the log-probs of what it drew."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import ppo
import sampling

PAD, BOS, EOS = 0, 1, 2


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_gpt2(vocab_size=12, seed=0, **overrides):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        **overrides,
    )
    return GPT2LMHeadModel(config).eval()


def left_pad(prompts):
    """Left-pad lists of token ids -> (ids (B, P), mask (B, P))."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


PROMPTS = [[BOS, 5], [BOS, 7, 8, 9, 3], [BOS, 4, 4, 6]]


def test_left_padded_logprobs_equal_unpadded_reference():
    model = tiny_gpt2()
    value_head = torch.nn.Linear(32, 1)
    responses = [[3, 4, EOS], [6, 6, 6, 6, 6], [9]]
    prompt_ids, prompt_mask = left_pad(PROMPTS)
    response_ids = torch.tensor([r + [PAD] * (5 - len(r)) for r in responses])
    response_mask = torch.tensor([[1] * len(r) + [0] * (5 - len(r)) for r in responses])
    with torch.no_grad():
        logprobs, entropy, values = sampling.response_logprobs(
            model, prompt_ids, prompt_mask, response_ids, response_mask, 0.7, value_head
        )
        for i, (prompt, response) in enumerate(zip(PROMPTS, responses)):
            # Reference: a plain forward of the unpadded sequence, default positions.
            out = model(torch.tensor([prompt + response]), output_hidden_states=True)
            step_logprobs = torch.log_softmax(out.logits[0] / 0.7, dim=-1)[len(prompt) - 1 : -1]
            expected = step_logprobs.gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
            n = len(response)
            torch.testing.assert_close(logprobs[i, :n], expected, atol=1e-5, rtol=0)
            expected_entropy = -(step_logprobs.exp() * step_logprobs).sum(-1)
            torch.testing.assert_close(entropy[i, :n], expected_entropy, atol=1e-5, rtol=0)
            alone = sampling.response_logprobs(
                model,
                torch.tensor([prompt]),
                torch.ones(1, len(prompt)),
                torch.tensor([response]),
                torch.ones(1, n),
                0.7,
                value_head,
            )
            torch.testing.assert_close(values[i, :n], alone[2][0], atol=1e-5, rtol=0)
    for out in (logprobs, entropy, values):
        assert (out[response_mask == 0] == 0).all()


def uniform_model(vocab_size=12):
    """Untied LM head set to zero: every next token is uniform over the vocabulary."""
    model = tiny_gpt2(vocab_size, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return model


def test_logprobs_block_eos_as_the_sampler_does_so_the_kl_cannot_go_negative():
    """Before min_new_tokens the sampler never draws EOS: its tokens come from the softmax without it.
    A policy that differs from its reference only in EOS's logit then has exactly zero KL on those steps
    (scored under the full softmax, it would show every sampled token less likely than the reference
    does: a negative k1 whose penalty rewards inflating the undrawn EOS)."""
    ref = tiny_gpt2()
    policy = copy.deepcopy(ref)
    head = torch.nn.Linear(32, 12)  # the reference's head plus a bias on EOS's logit alone
    with torch.no_grad():
        head.weight.copy_(ref.lm_head.weight)
        head.bias.zero_()[EOS] = 3.0
    policy.lm_head = head
    responses = [[3, 4, 5, 6, 7], [6, 6, 6, 6, 6], [9, 8, 3, 4, 5]]
    prompt_ids, prompt_mask = left_pad(PROMPTS)
    tokens = (prompt_ids, prompt_mask, torch.tensor(responses), torch.ones(3, 5, dtype=torch.long))
    blocked = dict(temperature=0.7, eos_token_id=EOS, min_new_tokens=3)
    with torch.no_grad():
        logprobs, entropy, _ = sampling.response_logprobs(policy, *tokens, **blocked)
        ref_logprobs, _, _ = sampling.response_logprobs(ref, *tokens, **blocked)
        full, _, _ = sampling.response_logprobs(policy, *tokens, temperature=0.7)
        full_ref, _, _ = sampling.response_logprobs(ref, *tokens, temperature=0.7)
        for i, (prompt, response) in enumerate(zip(PROMPTS, responses)):
            logits = policy(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1] / 0.7  # (5, V)
            logits[:3, EOS] = -float("inf")
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
            torch.testing.assert_close(logprobs[i], expected, atol=1e-5, rtol=0)
    assert torch.isfinite(entropy).all()
    torch.testing.assert_close(logprobs[:, :3], ref_logprobs[:, :3], atol=1e-5, rtol=0)  # no KL where blocked
    assert (logprobs[:, 3:] - ref_logprobs[:, 3:] < -1e-3).all()  # after: the EOS mass counts, as it is drawn
    assert (full[:, :3] - full_ref[:, :3] < -1e-3).all()  # the full softmax: a negative k1 on blocked steps
    assert sampling.drawn_as(ppo.PPOConfig(temperature=0.7, min_new_tokens=3), EOS) == blocked


def test_generation_mask_ends_at_eos_and_min_new_tokens_blocks_it():
    config = ppo.PPOConfig(min_new_tokens=3, max_new_tokens=10, device="cpu", seed=1)
    generator = torch.Generator().manual_seed(1)
    ids, mask = left_pad(PROMPTS * 30)
    response_ids, mask = sampling.sample(uniform_model(), ids, mask, config, PAD, EOS, generator=generator)
    lengths = mask.sum(1)
    assert (lengths >= 3).all() and (lengths <= 10).all()
    assert not (response_ids[:, :3] == EOS).any()  # EOS blocked before 3 tokens
    for ids, row_mask, length in zip(response_ids, mask, lengths):
        assert (row_mask[:length] == 1).all() and (row_mask[length:] == 0).all()
        assert (ids[length:] == PAD).all()
        eos_at = (ids == EOS).nonzero().flatten()
        if len(eos_at):  # mask ends at EOS inclusive
            assert eos_at[0] == length - 1
        else:  # cut at max_new_tokens
            assert length == 10
    assert (lengths < 10).any() and (lengths == 10).any()


def test_greedy_generation_equals_uncached_unpadded_decoding():
    model = tiny_gpt2()
    config = ppo.PPOConfig(min_new_tokens=2, max_new_tokens=8, device="cpu")
    batch_ids, batch_mask = sampling.sample(model, *left_pad(PROMPTS), config, PAD, EOS, greedy=True)
    for i, prompt in enumerate(PROMPTS):
        # Reference: no cache, no padding, one full forward per new token.
        sequence = list(prompt)
        for step in range(8):
            with torch.no_grad():
                logits = model(torch.tensor([sequence])).logits[0, -1]
            if step < 2:
                logits[EOS] = -float("inf")
            sequence.append(int(logits.argmax()))
            if sequence[-1] == EOS:
                break
        response = sequence[len(prompt) :]
        assert batch_mask[i].sum() == len(response)
        assert batch_ids[i, : len(response)].tolist() == response


def test_top_k_top_p_filter_by_hand():
    logits = torch.tensor([[1.0, 3.0, 0.0, 2.0]])  # probs .087 .644 .032 .237

    def kept(out):
        return torch.isfinite(out[0]).tolist()

    assert kept(sampling.filter_top_k_top_p(logits, 2, 1.0)) == [False, True, False, True]
    assert kept(sampling.filter_top_k_top_p(logits, 0, 0.7)) == [False, True, False, True]
    assert kept(sampling.filter_top_k_top_p(logits, 0, 0.6)) == [False, True, False, False]
    assert kept(sampling.filter_top_k_top_p(logits, 0, 0.95)) == [True, True, False, True]
