"""Loss math for the reward model and DPO: small pure functions, unit-tested on CPU.

Shapes: B pairs, T tokens, V vocabulary. Rewards and log-probs of a pair batch are (B,) tensors.
Every loss returns (scalar loss, stats) where stats are plain floats for logging.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DpoLossType = Literal["sigmoid", "ipo", "robust", "hinge"]
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "robust", "hinge")


# --- log-probabilities -------------------------------------------------------------------------


def shift_for_next_token(
    logits: Tensor, input_ids: Tensor, loss_mask: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Align a causal LM's outputs with its targets: logits[:, t] predicts input_ids[:, t + 1].

    logits (B, T, V), input_ids (B, T), loss_mask (B, T) marking target tokens in input_ids
    -> logits (B, T-1, V), labels (B, T-1), loss_mask (B, T-1).
    """
    return logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:]


def sequence_logprobs(logits: Tensor, labels: Tensor, loss_mask: Tensor) -> Tensor:
    """Sum of log p(labels[:, t]) over the positions where loss_mask is set.

    logits (B, T, V) already aligned with labels (B, T) (see shift_for_next_token),
    loss_mask (B, T) bool or 0/1 -> (B,) float32.
    """
    if logits.shape[:2] != labels.shape or labels.shape != loss_mask.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and loss_mask "
            f"{tuple(loss_mask.shape)} must agree on (B, T); align them with shift_for_next_token"
        )
    mask = loss_mask.bool()
    # Masked positions may hold any id (padding, -100); point them at 0 so gather stays in range.
    labels = torch.where(mask, labels, 0)
    # log p(y) = logit_y - logsumexp(logits): no (B, T, V) log_softmax output is kept, and rows go
    # one at a time so a bf16 batch never has a full float32 copy alive at once (as TRL does).
    rows = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        row_logits = row_logits.float()  # (T, V); float32 for a stable logsumexp
        label_logits = row_logits.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)  # (T,)
        rows.append(label_logits - torch.logsumexp(row_logits, dim=-1))  # (T,)
    token_logps = torch.stack(rows)  # (B, T)
    # where, not multiply: a -inf log-prob at a padding position would give -inf * 0 = nan.
    return torch.where(mask, token_logps, 0.0).sum(-1)  # (B,)


# --- reward model ------------------------------------------------------------------------------


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    target: Tensor | None = None,
    margin: Tensor | None = None,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Bradley-Terry loss: P(chosen beats rejected) = sigmoid(r_c - r_r - margin).

    chosen_rewards, rejected_rewards (B,); optional (B,) tensors:
    - target: probability that chosen is better, 1.0 normally, 0.5 for a tie. The loss is binary
      cross-entropy against it, so a tie pulls the two rewards together instead of apart.
    - margin: subtracted inside the sigmoid (Llama 2's margin loss): a strongly preferred pair must
      be separated by more.
    - weight: per-pair weight; the loss is the weighted mean.

    Stats: accuracy (r_c > r_r agrees with target > 0.5, over the `decided` non-tie pairs; nan
    when every pair is a tie), mean margin r_c - r_r, mean chosen and rejected rewards.
    """
    _check_pair_shapes(
        chosen_rewards, rejected_rewards, target=target, margin=margin, weight=weight
    )
    diff = chosen_rewards.float() - rejected_rewards.float()  # (B,)
    logits = diff if margin is None else diff - margin.float()  # (B,)
    if target is None:
        target = torch.ones_like(logits)
    # BCE with a soft target: -(t * logsigmoid(z) + (1 - t) * logsigmoid(-z)).
    losses = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")  # (B,)
    loss = _weighted_mean(losses, weight)

    with torch.no_grad():
        decided = target != 0.5  # (B,) ties say nothing about which side should win
        correct = (diff > 0) == (target > 0.5)  # (B,)
        num_decided = int(decided.sum())
        accuracy = float((correct & decided).sum()) / num_decided if num_decided else float("nan")
        stats = {
            "accuracy": accuracy,
            "decided": float(num_decided),
            "margin": diff.mean().item(),
            "chosen": chosen_rewards.float().mean().item(),
            "rejected": rejected_rewards.float().mean().item(),
        }
    return loss, stats


# --- DPO ---------------------------------------------------------------------------------------


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    loss_type: DpoLossType = "sigmoid",
    label_smoothing: float = 0.0,
    weight: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """DPO and its variants, with TRL's definitions. All log-prob inputs are (B,).

    logits = (pi_c - pi_r) - (ref_c - ref_r), then per pair:
    - sigmoid: -logsigmoid(beta * logits) * (1 - ls) - logsigmoid(-beta * logits) * ls
      (DPO; with label smoothing ls it is conservative DPO, cDPO)
    - robust:  (-logsigmoid(beta * logits) * (1 - ls) + logsigmoid(-beta * logits) * ls)
      / (1 - 2 * ls)  (robust DPO, unbiased under label noise ls)
    - hinge:   relu(1 - beta * logits)  (SLiC)
    - ipo:     (logits - 1 / (2 * beta)) ** 2; IPO (and TRL) feed it length-averaged log-probs.
    The loss is the mean over pairs, weighted by `weight` (B,) when given.

    Stats follow TRL's names: implicit rewards beta * (pi - ref) for chosen and rejected, how often
    the chosen one is higher, and their mean margin.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(DPO_LOSS_TYPES)}, got {loss_type!r}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if loss_type == "sigmoid" and not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing for sigmoid must be in [0, 0.5], got {label_smoothing}")
    if loss_type == "robust" and not 0.0 <= label_smoothing < 0.5:
        # 1 - 2 * ls is the divisor: at 0.5 the labels carry no information.
        raise ValueError(f"label_smoothing for robust must be in [0, 0.5), got {label_smoothing}")
    if loss_type in ("hinge", "ipo") and label_smoothing != 0.0:
        raise ValueError(
            f"label_smoothing only applies to the sigmoid and robust losses, not {loss_type}; "
            "leave it at 0"
        )
    _check_pair_shapes(policy_chosen_logps, policy_rejected_logps, weight=weight)
    _check_pair_shapes(ref_chosen_logps, ref_rejected_logps, policy_logps=policy_chosen_logps)

    pi_logratios = policy_chosen_logps.float() - policy_rejected_logps.float()  # (B,)
    ref_logratios = ref_chosen_logps.float() - ref_rejected_logps.float()  # (B,)
    logits = pi_logratios - ref_logratios  # (B,)
    ls = label_smoothing
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    elif loss_type == "robust":
        losses = -F.logsigmoid(beta * logits) * (1 - ls) + F.logsigmoid(-beta * logits) * ls
        losses = losses / (1 - 2 * ls)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:  # ipo
        losses = (logits - 1 / (2 * beta)) ** 2
    loss = _weighted_mean(losses, weight)

    with torch.no_grad():
        chosen_rewards = beta * (policy_chosen_logps.float() - ref_chosen_logps.float())  # (B,)
        rejected_rewards = beta * (policy_rejected_logps.float() - ref_rejected_logps.float())
        stats = {
            "rewards/chosen": chosen_rewards.mean().item(),
            "rewards/rejected": rejected_rewards.mean().item(),
            "rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
            "rewards/margin": (chosen_rewards - rejected_rewards).mean().item(),
        }
    return loss, stats


# --- helpers -----------------------------------------------------------------------------------


def _weighted_mean(losses: Tensor, weight: Tensor | None) -> Tensor:
    """losses (B,), weight (B,) or None -> scalar."""
    if weight is None:
        return losses.mean()
    weight = weight.to(losses.dtype)
    return (losses * weight).sum() / weight.sum()


def _check_pair_shapes(chosen: Tensor, rejected: Tensor, **optional: Tensor | None) -> None:
    if chosen.dim() != 1 or chosen.shape != rejected.shape:
        raise ValueError(
            f"chosen and rejected must both be (B,), got {tuple(chosen.shape)} and "
            f"{tuple(rejected.shape)}"
        )
    for name, value in optional.items():
        if value is not None and value.shape != chosen.shape:
            raise ValueError(
                f"{name} must be (B,) = {tuple(chosen.shape)}, got {tuple(value.shape)}"
            )
