"""Loss math for the reward model, DPO, SFT, KTO and online RL: small pure functions,
unit-tested on CPU.

Shapes: B pairs (or answers), T tokens, V vocabulary. Rewards and log-probs of a batch are (B,)
tensors. Every loss returns (scalar loss, stats) where stats are plain floats for logging.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from training.engine import metric_names as metric
from training.engine.config import DPO_LOSS_TYPES, DPOLossType

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


class _ProjectedTokenLogprobs(torch.autograd.Function):
    """log p(target) and the entropy under softmax(hidden @ weight.T / temperature), a chunk of
    tokens at a time.

    The plain route materialises (M, V) fp32 logits, their log-softmax and its gradient: on a
    49k vocabulary several hundred MB a step, whose allocation and memory traffic cost more than
    the projection itself on a CPU. Here only one chunk's logits exist at a time, forward and
    backward; the backward recomputes them (one more matmul) instead of keeping them. The
    entropy, when asked for, is for reporting: it carries no gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,  # autograd's context: holds what backward needs
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        temperature: float,
        chunk: int,
        with_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        # hidden (M, H), weight (V, H), targets (M,) -> (M,) log-probs and (M,) entropies
        # (empty unless with_entropy), float32
        logps = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        log_normalizers = torch.empty_like(logps)
        entropies = torch.empty_like(logps) if with_entropy else logps.new_empty(0)
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            logits = (hidden[part] @ weight.T).float().div_(temperature)  # (chunk, V)
            log_normalizers[part] = torch.logsumexp(logits, dim=-1)
            logps[part] = logits.gather(1, targets[part, None])[:, 0] - log_normalizers[part]
            if with_entropy:
                probs = torch.exp(logits - log_normalizers[part, None])
                entropies[part] = log_normalizers[part] - (probs * logits).sum(dim=-1)
        ctx.save_for_backward(hidden, weight, targets, log_normalizers)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(entropies)
        return logps, entropies

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor, _grad_entropies: Tensor
    ) -> tuple[Tensor, None, None, None, None, None]:
        hidden, weight, targets, log_normalizers = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden)
        for start in range(0, hidden.shape[0], ctx.chunk):
            part = slice(start, start + ctx.chunk)
            logits = (hidden[part] @ weight.T).float().div_(ctx.temperature)
            # d log p(target) / d logits = onehot(target) - softmax(logits)
            grad_logits = torch.exp(logits - log_normalizers[part, None]).mul_(-grad[part, None])
            rows = torch.arange(grad_logits.shape[0], device=grad.device)
            grad_logits[rows, targets[part]] += grad[part]
            grad_logits.div_(ctx.temperature)
            grad_hidden[part] = grad_logits.to(hidden.dtype) @ weight
        return grad_hidden, None, None, None, None, None


@overload
def projected_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    temperature: float = ...,
    chunk: int = ...,
    with_entropy: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@overload
def projected_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    temperature: float = ...,
    chunk: int = ...,
    with_entropy: Literal[False] = ...,
) -> tuple[Tensor, None]: ...


def projected_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    chunk: int = 128,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """log p(targets[m]), and with_entropy the entropy of p, when hidden[m] @ weight.T /
    temperature are the logits: (M, H), (V, H), (M,) -> (M,) log-probs, and (M,) entropies (no
    gradient) or None: DPO's log-probs skip that work.

    The log-probs equal -cross_entropy(logits, targets) in value and in their gradient to
    hidden, without the (M, V) tensors (see _ProjectedTokenLogprobs). The weight must be frozen;
    its gradient is not computed. Runs in the autocast dtype when autocast is on, as a Linear
    would.
    """
    if weight.requires_grad:
        raise ValueError("projected_token_logprobs needs a frozen projection weight")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    # Function.apply is untyped in torch: it returns what forward does.
    logps, entropies = _ProjectedTokenLogprobs.apply(  # type: ignore[no-untyped-call]
        hidden.to(dtype), weight.to(dtype), targets, temperature, chunk, with_entropy
    )
    return logps, entropies if with_entropy else None


def frozen_projection_weight(head: torch.nn.Module) -> Tensor | None:
    """The weight of an output layer projected_token_logprobs can stand in for (frozen, no
    bias), else None."""
    weight = getattr(head, "weight", None)
    if (
        isinstance(weight, Tensor)
        and not weight.requires_grad
        and getattr(head, "bias", None) is None
    ):
        return weight
    return None


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
            metric.ACCURACY: accuracy,
            metric.DECIDED: float(num_decided),
            metric.MARGIN: diff.mean().item(),
            metric.CHOSEN_REWARD: chosen_rewards.float().mean().item(),
            metric.REJECTED_REWARD: rejected_rewards.float().mean().item(),
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
    loss_type: DPOLossType = "sigmoid",
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
            metric.DPO_REWARDS_CHOSEN: chosen_rewards.mean().item(),
            metric.DPO_REWARDS_REJECTED: rejected_rewards.mean().item(),
            metric.DPO_REWARDS_ACCURACY: (chosen_rewards > rejected_rewards).float().mean().item(),
            metric.DPO_REWARDS_MARGIN: (chosen_rewards - rejected_rewards).mean().item(),
        }
    return loss, stats


# --- SFT and KTO: one answer at a time -----------------------------------------------------------


def sft_loss(completion_logps: Tensor, answer_lengths: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Mean negative log-likelihood per answer token over the batch, TRL's SFT loss.

    completion_logps (N,) each answer's summed log-prob, answer_lengths (N,) its tokens ->
    scalar. Every token counts the same, so a long answer weighs more than a short one.
    """
    if completion_logps.dim() != 1 or completion_logps.shape != answer_lengths.shape:
        raise ValueError(
            f"completion_logps and answer_lengths must both be (N,), got "
            f"{tuple(completion_logps.shape)} and {tuple(answer_lengths.shape)}"
        )
    tokens = answer_lengths.sum().clamp(min=1).to(torch.float32)
    return -completion_logps.float().sum() / tokens, {}


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    desirable: Tensor,
    policy_kl_logps: Tensor,
    ref_kl_logps: Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """KTO (Ethayarajh et al. 2024), with TRL's definitions.

    policy_logps, ref_logps (B,) each answer's summed log-prob; desirable (B,) bool;
    policy_kl_logps, ref_kl_logps (M,) the same for answers paired with prompts they were not
    written for. With r = policy - ref each answer's log-ratio and the reference point
    z_ref = max(0, mean(policy_kl - ref_kl)), an estimate of KL(policy || reference) that carries
    no gradient (the policy cannot lower its loss by moving the point it is judged against):
    - desirable:   lambda_D * (1 - sigmoid(beta * (r - z_ref)))
    - undesirable: lambda_U * (1 - sigmoid(beta * (z_ref - r)))
    The loss is the mean over the B answers.

    Stats follow TRL's names: kl (z_ref), and the implicit rewards beta * r of the desirable
    (rewards/chosen) and undesirable (rewards/rejected) answers, nan when the batch has none.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if desirable_weight <= 0 or undesirable_weight <= 0:
        raise ValueError("desirable_weight and undesirable_weight must be positive")
    if policy_logps.dim() != 1 or not policy_logps.shape == ref_logps.shape == desirable.shape:
        raise ValueError(
            f"policy_logps, ref_logps and desirable must all be (B,), got "
            f"{tuple(policy_logps.shape)}, {tuple(ref_logps.shape)} and {tuple(desirable.shape)}"
        )
    if policy_kl_logps.dim() != 1 or policy_kl_logps.shape != ref_kl_logps.shape:
        raise ValueError(
            f"policy_kl_logps and ref_kl_logps must both be (M,), got "
            f"{tuple(policy_kl_logps.shape)} and {tuple(ref_kl_logps.shape)}"
        )
    z_ref = (policy_kl_logps.float() - ref_kl_logps.float()).mean().clamp(min=0).detach()
    logratios = policy_logps.float() - ref_logps.float()  # (B,)
    desirable = desirable.bool()
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (logratios - z_ref))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z_ref - logratios))),
    )  # (B,)

    with torch.no_grad():
        rewards = beta * logratios
        stats = {
            metric.KL: z_ref.item(),
            metric.DPO_REWARDS_CHOSEN: _mean_where(rewards, desirable),
            metric.DPO_REWARDS_REJECTED: _mean_where(rewards, ~desirable),
        }
    return losses.mean(), stats


# --- helpers -----------------------------------------------------------------------------------


def _weighted_mean(losses: Tensor, weight: Tensor | None) -> Tensor:
    """losses (B,), weight (B,) or None -> scalar."""
    if weight is None:
        return losses.mean()
    weight = weight.to(losses.dtype)
    return (losses * weight).sum() / weight.sum()


def _mean_where(values: Tensor, mask: Tensor) -> float:
    """Mean of values (B,) where mask (B,) is set; nan when it is set nowhere."""
    return values[mask].mean().item() if bool(mask.any()) else float("nan")


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


# --- online RL: PPO and RLOO ---------------------------------------------------------------------
# A rollout batch holds N answers of at most R tokens. Per-token tensors are (N, R), right-padded;
# `mask` (N, R) is True on answer tokens (the closing eos included) and False on padding, which
# never counts in a mean, a whitening or a sum.

KLEstimator = Literal["k1", "k3"]


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the positions where mask is set; values and mask (N, R) -> scalar."""
    # where, not multiply: an inf at a padding position (exp of a garbage log-ratio) times 0 is nan.
    mask = mask.bool()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def masked_var(values: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance over masked positions (Bessel's correction, as TRL does)."""
    mean = masked_mean(values, mask)
    count = mask.sum().clamp(min=2).to(values.dtype)
    return masked_mean((values - mean) ** 2, mask) * count / (count - 1)


def masked_whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True) -> Tensor:
    """(values - mean) / std over masked positions; padding comes back as 0.

    shift_mean=False keeps the mean (whitening rewards must not change their sign on average).
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, 0.0)


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of the sampled tokens (N, R).

    k1 = log(pi / ref): unbiased, can be negative on one token. k3 = (r - 1) - log r with
    r = ref / pi: unbiased and never negative, lower variance (Schulman, "Approximating KL").
    """
    log_ratio = logprobs.float() - ref_logprobs.float()  # log(pi / ref)
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be k1 or k3, got {estimator!r}")


def token_rewards(
    scores: Tensor, kl: Tensor, mask: Tensor, *, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """Per-token reward: -kl_coef * KL at every answer token, the score added at the last one.

    scores (N,), kl and mask (N, R) -> rewards (N, R) and the KL part alone (N, R); padding 0.
    """
    mask = mask.bool()
    non_score = torch.where(mask, -kl_coef * kl, 0.0)  # (N, R)
    last = mask.sum(dim=1).clamp(min=1) - 1  # (N,) index of each answer's last token
    rewards = non_score.clone()
    rewards[torch.arange(len(scores), device=scores.device), last] += scores.to(rewards.dtype)
    return rewards, non_score


def gae_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over each answer's tokens.

    rewards, values, mask (N, R) -> advantages (N, R), returns = advantages + values (N, R).
    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 past the last token (the answer is over);
    A_t = delta_t + gamma * lam * A_{t+1}. Padding comes back as 0.
    """
    mask = mask.bool()
    rewards = torch.where(mask, rewards.float(), 0.0)
    values = torch.where(mask, values.float(), 0.0)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (N,) A_{t+1}
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = torch.where(mask, advantages, 0.0)
    return advantages, torch.where(mask, advantages + values, 0.0)


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *, cliprange: float
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, a mean over answer tokens; all inputs (N, R).

    loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))), ratio = pi / pi_old.
    Stats: clipfrac (share of tokens where the clipped term won), approx_kl
    (0.5 * mean((log ratio)^2), an estimate of KL(old || new)), mean ratio.
    """
    log_ratio = logprobs.float() - old_logprobs.float()  # (N, R)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            metric.CLIPFRAC: masked_mean((clipped > unclipped).float(), mask).item(),
            metric.APPROX_KL: masked_mean(0.5 * log_ratio**2, mask).item(),
            metric.RATIO: masked_mean(ratio, mask).item(),
        }
    return loss, stats


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, cliprange_value: float
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped value loss, a mean over answer tokens; all inputs (N, R).

    loss = 0.5 * mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)).
    Stats: value_clipfrac (share of tokens where the clipped error was larger).
    """
    values = values.float()
    clipped_values = old_values + torch.clamp(
        values - old_values, -cliprange_value, cliprange_value
    )
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask).item()
    return loss, {metric.VALUE_CLIPFRAC: clipfrac}


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over answer tokens: 1 is a perfect critic, 0 one
    no better than a constant, negative worse. nan when the returns do not vary."""
    var_returns = masked_var(returns.float(), mask)
    if var_returns.item() == 0:
        return float("nan")
    return (1 - masked_var(returns.float() - values.float(), mask) / var_returns).item()


def rloo_advantages(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): each of a prompt's k answers is compared
    with the mean reward of the k - 1 others. rewards (P, k) -> advantages (P, k)."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 answers per prompt")
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def adaptive_kl_coef(
    kl_coef: float, current_kl: float, *, target: float, horizon: int, steps: int
) -> float:
    """Ziegler et al. (2019)'s proportional controller: beta grows when the measured KL is above
    target and shrinks below it, by at most 20% of steps / horizon per update."""
    error = min(max(current_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * steps / horizon)
