"""scoring.py: the RM's score is its logit margin, its texts are held to its position limit, and the
SDPA view scores as the eager RM does on the same tensors (tests/test_reward_attribution.py, on
coalition texts)."""

import pytest
import torch

import scoring


def test_score_is_the_logit_margin_and_rejects_long_texts(embedded_task):
    rm, tokenizer = embedded_task.reward_model, embedded_task.reward_tokenizer
    logits = rm(**tokenizer(["the plot was superb ."], return_tensors="pt")).logits[0]
    margin = scoring.score(rm, tokenizer, ["the plot"], [" was superb ."])
    assert torch.allclose(margin, (logits[1] - logits[0]).reshape(1), atol=1e-5)
    with pytest.raises(ValueError, match="at most 64 expected"):
        scoring.score(rm, tokenizer, ["the plot"], [" was good" * 40])
