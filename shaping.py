"""Turn one sequence reward R into per-token rewards r'_t that still sum to R.

Each credit component c^k spreads R over the response tokens in its own way and sums to R
exactly (docs/method.md, section 3); for response i with T_i real tokens:

    sparse     c_t = R [t == T_i]                      (standard RLHF)
    uniform    c_t = R / T_i
    and one per attribution a caller gives, of one of two kinds:
    shares     c_t = alpha_t R, alpha >= 0 renormalised    (attention: ABC, Chan et al. 2024)
    additive   c_t = a_t + (R - sum_j a_j) [t == T_i]      (in reward units: SHAP's phi, LIME's beta,
               or any other estimate of each token's part of R)

The shaped reward mixes them with weights on the simplex (Koo et al. 2025, r' = W^T E r):

    r'_t = sum_k w_k c^k_t,   w_k >= 0,  sum_k w_k = 1   =>   sum_t r'_t = R

so every trajectory keeps its undiscounted return and the optimal policy of R is kept
(gamma = 1). ABC is shape(components, {"attention": 0.8, "sparse": 0.2}).

A worked example: R = 6 on a 3-token response, attention alpha = (.5, .25, .25), SHAP
phi = (1, 2, -1), so the all-masked baseline is f(x, masked) = R - sum phi = 4:

    sparse     (0,  0,   6)
    uniform    (2,  2,   2)
    attention  (3,  1.5, 1.5)
    shap       (1,  2,  -1 + 4)      the baseline lands on the last token
    r' = 0.5 shap + 0.5 sparse = (0.5, 1, 4.5),   sum = 6 = R

The KL penalty per token is ppo.py's business; shaping only redistributes R.

Shapes: B responses, T the longest response (T_i real tokens in response i); R the sequence
reward (B,) (the RM score, or RCfD's calibrated score); every component and r' is (B, T),
zero outside response_mask.
"""

from collections.abc import Callable

import torch

BUILT_IN = ("sparse", "uniform")  # the components every call gives; attributions add their own
SIMPLEX_TOLERANCE = 1e-6  # on the simplex: every w_k >= -tol and |sum_k w_k - 1| <= tol (as bayes_opt)


def check_finite(scores: torch.Tensor, what: str) -> None:
    """ValueError naming the first response whose score is NaN or infinite."""
    bad = (~torch.isfinite(scores)).nonzero()
    if len(bad):
        raise ValueError(
            f"{what} of response {int(bad[0])} is {scores[int(bad[0])].item()}; expected a finite number"
        )


def check_weights(weights: dict[str, float], names: tuple[str, ...] | None = None) -> None:
    """Weights must lie on the simplex, w_k >= 0, sum_k w_k = 1, and name components among `names`
    (None: any name; `shape` checks the names against the components it is given).

    Both within SIMPLEX_TOLERANCE (w_k >= -1e-6, |sum - 1| <= 1e-6), the definition
    bayes_opt.py uses too, so weights a BO proposes are always accepted here.
    """
    unknown = sorted(set(weights) - set(names or weights))
    if unknown:
        raise ValueError(f"unknown credit component(s) {unknown}; expected names among {names}")
    values = torch.tensor([float(w) for w in weights.values()], dtype=torch.float64)
    if (
        len(values) == 0
        or not torch.isfinite(values).all()
        or (values < -SIMPLEX_TOLERANCE).any()
        or abs(values.sum().item() - 1) > SIMPLEX_TOLERANCE
    ):
        raise ValueError(
            f"weights {weights} are not on the simplex; expected finite values >= 0 "
            f"summing to 1 (both within {SIMPLEX_TOLERANCE})"
        )


def rcfd_scores(scores: torch.Tensor, demo_scores: torch.Tensor) -> torch.Tensor:
    """RCfD sequence reward (Rita et al. 2024): R_cfd(x, y) = -(f(x, y) - f(x, y_demo))^2.

    The reward peaks when the response scores like the prompt's demonstration, so the policy
    is pulled towards the demonstrations' reward level instead of exploiting the RM. It works
    with every component: pass R_cfd as `scores` to `credit_components`. For SHAP and LIME to
    explain the calibrated score itself (not f), explain `rcfd_reward_fn(reward_fn, ...)`:
    then phi sums to R_cfd(full) - R_cfd(all masked) and the residual keeps conservation.
    """
    scores, demo_scores = torch.as_tensor(scores), torch.as_tensor(demo_scores)
    if scores.shape != demo_scores.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)} and demo_scores {tuple(demo_scores.shape)} "
            "must have the same shape, one demonstration score per response"
        )
    return -((scores - demo_scores) ** 2)


def rcfd_reward_fn(
    reward_fn: Callable[[list[str], list[str]], torch.Tensor], demonstrations: dict[str, str]
) -> Callable[[list[str], list[str]], torch.Tensor]:
    """The reward function (prompts, responses) -> R_cfd (N,), for SHAP/LIME to explain RCfD.

    f(x, y_demo) is computed once per prompt, on first sight, and kept: an explainer calls
    the wrapped function with thousands of masked responses of the same few prompts.
    """
    demo_scores: dict[str, float] = {}

    def wrapped(prompts: list[str], responses: list[str]) -> torch.Tensor:
        missing = sorted(set(prompts) - set(demo_scores) - set(demonstrations))
        if missing:
            raise ValueError(f"no demonstration for prompt(s) {missing[:3]}; RCfD needs one per prompt")
        new = sorted(set(prompts) - set(demo_scores))
        if new:
            demo_scores.update(zip(new, reward_fn(new, [demonstrations[p] for p in new]).tolist()))
        scores = torch.as_tensor(reward_fn(prompts, responses), dtype=torch.float32)
        return rcfd_scores(scores, torch.tensor([demo_scores[p] for p in prompts]))

    return wrapped


def credit_components(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    attributions: dict[str, torch.Tensor] | None = None,
    shares: tuple[str, ...] = ("attention",),
) -> dict[str, torch.Tensor]:
    """Every available credit component (B, T), each summing to R per response, zero outside the mask.

    Always "sparse" and "uniform"; plus one per attribution given, under its name: those named in
    `shares` (attention) are alpha >= 0, renormalised to sum 1 over the response; the others are in
    reward units (SHAP, LIME), completed by the residual on the last real token. A response whose
    shares are all zero gets the sparse credit: no information about the tokens, so no redistribution
    (additive rows of zeros reduce to sparse the same way, through the residual).
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.ndim != 1 or response_mask.ndim != 2 or response_mask.shape[0] != scores.shape[0]:
        raise ValueError(
            f"scores {tuple(scores.shape)} and response_mask {tuple(response_mask.shape)}; "
            "expected (B,) and (B, T)"
        )
    check_finite(scores, "the score")
    attributions = attributions or {}
    mask = response_mask.float()
    lengths = mask.sum(1)
    if (lengths == 0).any():
        raise ValueError(f"response {int((lengths == 0).nonzero()[0])} has no real token (empty mask row)")
    last = torch.zeros_like(mask).scatter_(
        1, (mask.cumsum(1).argmax(1, keepdim=True)), 1.0
    )  # (B, T) 1 on T_i
    components = {"sparse": scores[:, None] * last, "uniform": scores[:, None] * mask / lengths[:, None]}
    for name, values in attributions.items():
        if name in components:
            raise ValueError(
                f"attribution {name!r} has the name of a built-in component; expected none of {BUILT_IN}"
            )
        if values.shape != mask.shape:
            raise ValueError(
                f"attribution {name!r} has shape {tuple(values.shape)}; expected {tuple(mask.shape)}"
            )
        values = values.float() * mask
        check_finite(values.sum(1), f"the {name} attribution")
        if name in shares:
            if (values < 0).any():
                raise ValueError(f"{name} shares must be >= 0; got a negative value")
            total = values.sum(1, keepdim=True)
            alpha = torch.where(total > 0, values / total.clamp_min(1e-30), last)
            components[name] = alpha * scores[:, None]
        else:
            components[name] = values + (scores - values.sum(1))[:, None] * last
    return components


def shape(components: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """r'_t = sum_k w_k c^k_t (B, T) for weights on the simplex (Koo et al. 2025, W^T E r).

    A component with weight 0 may be absent; a positive weight on an absent one is an error.
    """
    check_weights(weights)
    missing = sorted(name for name, weight in weights.items() if weight > 0 and name not in components)
    if missing:
        raise ValueError(f"weights for {missing}, which were not computed; available: {sorted(components)}")
    used = [(name, float(weight)) for name, weight in weights.items() if weight > 0]
    return sum(weight * components[name] for name, weight in used)
