"""evaluation.py: held-out reward and KL to the reference."""

import copy

import pytest
import torch

import evaluation
import ppo
import run
import task


def test_held_out_kl_is_zero_for_the_reference_and_grows_with_an_update(embedded_task):
    setup = run.Setup(embedded_task, None, None, None, ppo.PPOConfig(seed=0))
    setup.reward_fn = lambda prompts, responses: torch.zeros(len(prompts))
    pad, eos = setup.tokenizer.pad_token_id, setup.tokenizer.eos_token_id
    policy = copy.deepcopy(embedded_task.policy)
    reference = embedded_task.policy
    trainer = ppo.PPOTrainer(policy, setup.ppo_config, pad, eos, ref_policy=reference)
    before = evaluation.evaluate(trainer, setup, 8)
    assert abs(before["kl"]) < 1e-6 and abs(before["kl_k3"]) < 1e-6
    enc = setup.tokenizer(embedded_task.train_prompts[:16], return_tensors="pt", padding=True)
    rollout = trainer.rollout(enc["input_ids"], enc["attention_mask"])
    ones = rollout.response_mask.float()  # a reward on every token: the policy learns to write longer
    for _ in range(3):
        trainer.update(rollout, ones)
    after = evaluation.evaluate(trainer, setup, 8)
    assert after["kl_k3"] > 1e-3  # k3 >= 0 per token, so a moved policy shows a positive estimate


def test_credit_table_scores_each_arms_credit_against_the_truths_by_pearson_correlation(embedded_task):
    """The Shapley truth itself has fidelity +1 to it, its negation -1; tokens are the responses' own."""
    setup = run.Setup(embedded_task, None, None, None, ppo.PPOConfig(seed=0))
    drawn = evaluation.draw(setup, embedded_task.policy, embedded_task.val_prompts[:6], setup.ppo_config, 0)
    ids, mask = drawn.response_ids, drawn.response_mask
    truth = task.true_credit(embedded_task, "true_shapley", drawn.prompts, ids, mask)  # (B, T)
    table = evaluation.credit_table(setup, drawn, {"same": truth, "negated": -truth})
    assert table["fidelity"]["same"]["Shapley truth"] == pytest.approx(1.0)
    assert table["fidelity"]["negated"]["Shapley truth"] == pytest.approx(-1.0)
    assert table["truths"]["Shapley truth"] == truth.tolist()
    lengths = mask.sum(1).tolist()
    assert [len(row) for row in table["tokens"]] == lengths
    assert table["tokens"][0] == setup.tokenizer.convert_ids_to_tokens(ids[0, : lengths[0]])
