"""The credit stages as a verl reward manager: SHAP, LIME or attention credit as verl's per-token rewards.

verl (Sheng et al. 2024, HybridFlow) trains PPO on a reward per response token, `token_level_rewards`
(B, T), which its GAE and REINFORCE++ advantages read as they are. Its stock managers put the sequence
score on the last valid token; this one spreads it with the stages of this repository (docs/method.md):

    batch record (DataProto.batch, as verl's rollout lays it out)
        prompts         (B, P)      prompt ids, left-padded
        responses       (B, T)      response ids, right-padded (EOS included where the policy wrote one)
        attention_mask  (B, P + T)  1 on the real tokens of both
    R = f(x, y)                          a sequence-classifier RM (scoring.py)
    c^k_t                                credit components summing to R (reward_attribution.py, shaping.py)
    reward_tensor_t = sum_k w_k c^k_t    w on the simplex (Koo et al. 2025)  =>  sum_t = R, 0 on padding

Settings sit in verl's config under `reward.dense_credit` (a Hydra `+` override adds them):

    model_path          the RM: a local folder or hub name (loaded with eager attention, for ABC's maps)
    weights             {component: w_k}, components among sparse, uniform, attention, shap, lime
    shap_permutations, lime_samples, seed    as run.py's options (AttributionConfig)
    device              of the RM ("cpu", "cuda"; default: cuda when there is one)

verl 0.9.1 loads it by `reward.reward_manager.source=importlib`, `.module.path` this file and `.name`
DenseCreditRewardManager (docs/verl.md); it is also registered as "dense_credit" in both of verl's
registries. Two entry points: `__call__(data, return_dict)` explains a whole batch, one RM pass per
method; verl's reward loop calls `run_single` on one response at a time and `assemble_rm_scores` stacks
the rows.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the stage files

import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import registry
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.workers.reward_manager import registry as batch_registry

import coalitions
import loading
import reward_attribution
import scoring
import shaping

COMPONENTS = ("sparse", "uniform", "attention", "shap", "lime")  # the truths exist on the embedded task only
SETTINGS = ("model_path", "weights", "shap_permutations", "lime_samples", "seed", "device")
BATCH_KEYS = ("prompts", "responses", "attention_mask")
NAME = "dense_credit"  # in verl's registries


def read_settings(config) -> dict:
    """`reward.dense_credit` of verl's config (a DictConfig or a dict) as a plain dict, checked."""
    reward = (config or {}).get("reward") or {}
    settings = dict(reward.get("dense_credit") or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or "model_path" not in settings or "weights" not in settings:
        raise ValueError(
            f"reward.dense_credit has keys {sorted(settings)}; expected model_path and weights, "
            f"optionally {SETTINGS[2:]}"
        )
    weights = {str(name): float(w) for name, w in dict(settings["weights"]).items()}
    off = sorted(set(weights) - set(COMPONENTS))
    if off:
        raise ValueError(f"weights name {off}; expected components among {COMPONENTS}")
    shaping.check_weights(weights)
    return {**settings, "weights": weights}


def unpack(data: DataProto, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """verl's record as the stages take it: prompt ids (B, P) with every padding position made the policy
    tokenizer's pad id (a special token, which decoding skips, whatever id the rollout padded with),
    response ids (B, T) and response_mask (B, T), 1 up to and including the last real token."""
    missing = [key for key in BATCH_KEYS if key not in data.batch.keys()]
    if missing:
        raise ValueError(f"the batch has no {missing}; expected {BATCH_KEYS}, as verl's rollout writes them")
    prompts, responses, attention_mask = (data.batch[key].cpu() for key in BATCH_KEYS)
    P, T = prompts.shape[1], responses.shape[1]
    if attention_mask.shape != (len(prompts), P + T):
        shapes = tuple(prompts.shape), tuple(responses.shape), tuple(attention_mask.shape)
        expected = "(B, P), (B, T), (B, P + T)"
        raise ValueError(f"prompts, responses, attention_mask have shapes {shapes}; expected {expected}")
    prompt_mask, response_mask = attention_mask[:, :P].bool(), attention_mask[:, P:].long()  # (B, P), (B, T)
    return prompts.masked_fill(~prompt_mask, pad_token_id), responses, response_mask


class DenseCreditRewardManager(RewardManagerBase):
    """verl reward manager whose reward tensor is this project's shaped credit r'_t = sum_k w_k c^k_t."""

    def __init__(self, config, tokenizer, compute_score=None, **verl_kwargs):
        """config: verl's config (reads `reward.dense_credit`); tokenizer: the policy's. compute_score and
        verl's other keyword arguments (its own RM's router and tokenizer) are not used: the RM is ours."""
        settings = read_settings(config)  # bad settings fail here, before the RM loads
        super().__init__(config, tokenizer, compute_score)
        self.weights = settings["weights"]
        self.reward_model, self.reward_tokenizer = loading.load_reward_model(settings["model_path"])
        device = settings.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.reward_model.to(device)
        self.scorer = scoring.sdpa_view(self.reward_model)  # the same weights behind the fast kernel
        mask = self.reward_tokenizer.mask_token or self.reward_tokenizer.unk_token  # a hidden token's text
        picked = {name: settings[name] for name in SETTINGS[2:5] if name in settings}  # K, S, seed
        self.attribution = reward_attribution.AttributionConfig(mask, **picked)

    def reward_fn(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """f(x, y) (N,) on texts: what SHAP and LIME explain."""
        return scoring.score(self.scorer, self.reward_tokenizer, prompts, responses)

    def dense_rewards(self, data: DataProto) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward tensor r' (B, T), sum_t r'_t = R, zero on padding; and R = f(x, y) (B,)."""
        prompt_ids, response_ids, response_mask = unpack(data, self.tokenizer.pad_token_id)
        prompts, pieces = coalitions.response_texts(self.tokenizer, prompt_ids, response_ids, response_mask)
        scores = self.reward_fn(prompts, ["".join(row) for row in pieces])  # (B,)
        methods = [name for name, w in self.weights.items() if w > 0 and name in reward_attribution.METHODS]
        explainer = (self.reward_fn, self.attribution, self.reward_model, self.reward_tokenizer)
        attributions = {}
        for method in methods:
            values, _ = reward_attribution.attribute_texts(
                method, prompts, pieces, *explainer
            )  # (B, max T_i)
            width = response_mask.shape[1] - values.shape[1]  # responses shorter than verl's T
            attributions[method] = torch.nn.functional.pad(values, (0, width))  # (B, T)
        components = shaping.credit_components(scores, response_mask, attributions)  # each (B, T)
        return shaping.shape(components, self.weights), scores

    def __call__(self, data: DataProto, return_dict: bool = False) -> torch.Tensor | dict:
        """verl's batch API: the reward tensor (B, T), or with return_dict that and the extra info verl logs
        (`score`: R per response)."""
        rewards, scores = self.dense_rewards(data)
        rewards = rewards.to(data.batch["responses"].device)
        if not return_dict:
            return rewards
        return {"reward_tensor": rewards, "reward_extra_info": {"score": scores.tolist()}}

    async def run_single(self, data: DataProto) -> dict:
        """verl's reward loop: one response (the last row of `data`), its whole row as `reward_score`."""
        rewards, scores = self.dense_rewards(data[-1:])  # (1, T), (1,)
        return {"reward_score": rewards[0].tolist(), "reward_extra_info": {"score": scores[0].item()}}

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[list[float]]) -> torch.Tensor:
        """verl's `rm_scores` (B, T) from the rows `run_single` returned (its default puts scalars on the
        last valid token)."""
        rows = torch.tensor(scores, dtype=torch.float32)  # (B, T)
        if rows.shape != data.batch["responses"].shape:
            raise ValueError(
                f"rows of shape {tuple(rows.shape)}; expected {tuple(data.batch['responses'].shape)}"
            )
        return rows.to(data.batch["responses"].device)


# verl's importlib loader runs this file anew at each load: register the first run's class only
if NAME not in registry.REWARD_MANAGER:
    registry.register(NAME)(DenseCreditRewardManager)  # reward.reward_manager.name (source "register")
if NAME not in batch_registry.REWARD_MANAGER_REGISTRY:
    batch_registry.register(NAME)(DenseCreditRewardManager)  # verl.workers.reward_manager's batch API
