"""Tests for shaping.py: every component and every simplex mix conserves R; errors are clear."""

import pytest
import torch

import shaping


def random_batch(seed: int, B: int = 6, T: int = 7):
    """Scores, a prefix response mask (lengths 1..T) and signed/non-negative attributions."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    lengths[0] = 1  # always include a one-token response
    mask = (torch.arange(T) < lengths[:, None]).float()
    scores = torch.randn(B, generator=generator) * 5
    attributions = {
        "attention": torch.rand(B, T, generator=generator) * mask,
        "shap": torch.randn(B, T, generator=generator) * mask,
        "lime": torch.randn(B, T, generator=generator) * mask,
        "true_shapley": torch.randn(B, T, generator=generator) * mask,
        "lexicon": torch.randn(B, T, generator=generator) * mask,
    }
    return scores, mask, attributions


def test_hand_computed_components_and_mix():
    scores, mask = torch.tensor([6.0]), torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    attributions = {
        "attention": torch.tensor([[0.5, 0.25, 0.25, 0.0]]),
        "shap": torch.tensor([[1.0, 2.0, -1.0, 0.0]]),
    }
    components = shaping.credit_components(scores, mask, attributions)
    assert components["sparse"].tolist() == [[0.0, 0.0, 6.0, 0.0]]
    assert components["uniform"].tolist() == [[2.0, 2.0, 2.0, 0.0]]
    assert components["attention"].tolist() == [[3.0, 1.5, 1.5, 0.0]]
    assert components["shap"].tolist() == [[1.0, 2.0, 3.0, 0.0]]  # residual 6 - 2 = 4 on the last token
    shaped = shaping.shape(components, {"shap": 0.5, "sparse": 0.5})
    assert torch.allclose(shaped, torch.tensor([[0.5, 1.0, 4.5, 0.0]]))


@pytest.mark.parametrize("seed", range(3))
def test_every_component_conserves_the_reward(seed):
    scores, mask, attributions = random_batch(seed)
    components = shaping.credit_components(scores, mask, attributions)
    assert sorted(components) == sorted([*shaping.BUILT_IN, *attributions])
    for name, credit in components.items():
        assert torch.allclose(credit.sum(1), scores, atol=1e-5), name
        assert (credit[mask == 0] == 0).all(), name


def test_random_simplex_mixes_conserve_the_reward():
    scores, mask, attributions = random_batch(7)
    components = shaping.credit_components(scores, mask, attributions)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        draw = -torch.rand(5, generator=generator).log()  # normalised exponentials = Dirichlet(1)
        weights = dict(zip(components, (draw / draw.sum()).tolist()))
        shaped = shaping.shape(components, weights)
        assert torch.allclose(shaped.sum(1), scores, atol=1e-5)
        assert (shaped[mask == 0] == 0).all()


def test_abc_is_a_mix_of_attention_and_sparse():
    """Chan et al. 2024: r_t = beta alpha_t R + (1 - beta) R [t == T], beta = 0.8."""
    scores, mask, attributions = random_batch(3)
    components = shaping.credit_components(scores, mask, {"attention": attributions["attention"]})
    shaped = shaping.shape(components, {"attention": 0.8, "sparse": 0.2})
    alpha = attributions["attention"] / attributions["attention"].sum(1, keepdim=True)
    last = torch.nn.functional.one_hot(mask.sum(1).long() - 1, mask.shape[1])
    expected = 0.8 * alpha * scores[:, None] + 0.2 * scores[:, None] * last
    assert torch.allclose(shaped, expected, atol=1e-6)


def test_one_token_response_gets_the_whole_reward_from_every_component():
    scores, mask, attributions = random_batch(0, B=1, T=1)
    for credit in shaping.credit_components(scores, mask, attributions).values():
        assert torch.allclose(credit, scores[:, None])


def test_zero_attributions_fall_back_to_sparse():
    scores, mask, _ = random_batch(1)
    zeros = torch.zeros_like(mask)
    components = shaping.credit_components(scores, mask, {"attention": zeros, "shap": zeros, "lime": zeros})
    for name in ("attention", "shap", "lime"):
        assert torch.equal(components[name], components["sparse"]), name


def test_attention_is_renormalised_over_the_response():
    scores, mask = torch.tensor([2.0]), torch.ones(1, 2)
    components = shaping.credit_components(scores, mask, {"attention": torch.tensor([[3.0, 1.0]])})
    assert torch.allclose(components["attention"], torch.tensor([[1.5, 0.5]]))


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"sparse": 0.5, "uniform": 0.4}, "simplex"),
        ({"sparse": 1.2, "uniform": -0.2}, "simplex"),
        ({"sparse": float("nan"), "uniform": 1.0}, "simplex"),
        ({}, "simplex"),
        ({"sparse": 0.5, "shapley": 0.5}, "shapley"),
    ],
)
def test_weights_off_the_simplex_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        shaping.check_weights(weights, ("sparse", "uniform", "shap"))


def test_weights_within_tolerance_are_accepted_and_missing_components_rejected():
    shaping.check_weights({"sparse": 0.3, "uniform": 0.7 + 5e-7})
    shaping.check_weights({"sparse": -5e-7, "uniform": 1.0})  # bayes_opt's tolerance, both ways
    scores, mask, _ = random_batch(2)
    components = shaping.credit_components(scores, mask)
    shaped = shaping.shape(components, {"sparse": 1.0, "shap": 0.0})  # weight 0: may be absent
    assert torch.equal(shaped, components["sparse"])
    with pytest.raises(ValueError, match="shap"):
        shaping.shape(components, {"sparse": 0.5, "shap": 0.5})


def test_bad_scores_and_attributions_are_rejected():
    scores, mask, attributions = random_batch(4)
    scores[2] = float("nan")
    with pytest.raises(ValueError, match="response 2"):
        shaping.credit_components(scores, mask)
    scores[2] = 1.0
    with pytest.raises(ValueError, match="the name of a built-in component"):
        shaping.credit_components(scores, mask, {"sparse": attributions["shap"]})
    with pytest.raises(ValueError, match="shape"):
        shaping.credit_components(scores, mask, {"shap": attributions["shap"][:, :3]})
    with pytest.raises(ValueError, match=">= 0"):
        shaping.credit_components(scores, mask, {"attention": -attributions["attention"]})
    with pytest.raises(ValueError, match="saliency shares must be >= 0"):  # a share of another name
        shaping.credit_components(
            scores, mask, {"saliency": -attributions["attention"]}, shares=("saliency",)
        )
    with pytest.raises(ValueError, match="no real token"):
        shaping.credit_components(scores, torch.cat([mask[:-1], torch.zeros(1, mask.shape[1])]))


def test_rcfd_scores_and_conservation():
    demo = torch.tensor([2.0, 3.0, -1.0])
    rcfd = shaping.rcfd_scores(torch.tensor([1.0, 3.0, 1.0]), demo)
    assert rcfd.tolist() == [-1.0, 0.0, -4.0]
    mask = torch.ones(3, 4)
    components = shaping.credit_components(rcfd, mask, {"shap": torch.randn(3, 4)})
    for credit in components.values():
        assert torch.allclose(credit.sum(1), rcfd, atol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        shaping.rcfd_scores(torch.zeros(3), torch.zeros(2))


def test_rcfd_reward_fn_scores_against_each_prompts_demonstration_once():
    calls = []

    def reward_fn(prompts, responses):
        calls.append(len(prompts))
        return torch.tensor([float(len(r.split())) for r in responses])

    demonstrations = {"a": " one two three", "b": " one"}
    rcfd_fn = shaping.rcfd_reward_fn(reward_fn, demonstrations)
    assert rcfd_fn(["a", "b", "a"], [" x", " x y", " x y z"]).tolist() == [-4.0, -1.0, 0.0]
    assert rcfd_fn(["b"], [" x y z w"]).tolist() == [-9.0]
    assert calls == [2, 3, 1]  # the demonstrations were scored once, in the first call
    with pytest.raises(ValueError, match="'c'"):
        rcfd_fn(["c"], [" x"])
