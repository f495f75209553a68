"""GRPO's objective and its successors' variants, on one batch of sampled completions (torch tensors):

  advantages    each completion's reward minus its group's mean, over the group's std unless scale=False
                (GRPO: Shao et al. 2024, arXiv:2402.03300, sec. 4.1.2; Dr. GRPO drops the std: Liu et al. 2025,
                arXiv:2503.20783, sec. 3.1)
  ratio         pi / pi_old per token (PPO, GRPO), or per sequence, the exp of the mean token log-ratio
                (GSPO: Zheng et al. 2025, arXiv:2507.18071, eq. 7), the same for every token of a completion
  clipped term  -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A); eps_high > eps_low is DAPO's clip-higher
                (Yu et al. 2025, arXiv:2503.14476, eq. 10)
  KL            beta (exp(q) - q - 1) with q = log pi_ref - log pi per token: Schulman's k3 estimator, as GRPO
                (eq. 4); beta = 0 leaves the reference out
  aggregation   grpo: each completion's mean over its tokens, then the mean over completions (GRPO, eq. 3);
                dr_grpo: the sum over all tokens over (completions x max completion length), a constant, so long
                answers are not favoured (Dr. GRPO, eq. 4); dapo: the sum over all tokens over their number, each
                token weighted alike (DAPO, eq. 8)

Masks are 1 on the completion tokens a completion's loss covers. `totals` give the normalisers over the whole
step when this batch is part of one (several micro-batches or ranks), so the parts add up to the step's loss.
"""

from dataclasses import dataclass
from typing import Optional

import torch

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
LEVELS = ("token", "sequence")


def advantages(rewards: torch.Tensor, group: int, scale: bool, eps: float = 1e-4) -> tuple:
    """(advantage per completion, each group's reward std), rewards [groups x group] in group order. The std is
    the sample std (n - 1), as TRL computes it, so reward functions behave alike in both."""
    grouped = rewards.view(-1, group)
    mean, std = grouped.mean(1, keepdim=True), grouped.std(1, keepdim=True)
    centred = grouped - mean
    out = centred / (std + eps) if scale else centred
    return out.flatten(), std.flatten()


@dataclass
class Totals:
    """The step's normalisers (the batch's own when None)."""

    completions: Optional[float] = None
    tokens: Optional[float] = None


def objective(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantage: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str,
    level: str,
    eps_low: float,
    eps_high: float,
    beta: float = 0.0,
    ref_logps: Optional[torch.Tensor] = None,
    max_length: int = 1,
    totals: Optional[Totals] = None,
) -> tuple:
    """(the loss, {kl, clipped, tokens}: the masked KL sum, the masked tokens whose clip bound is active, the masked
    tokens), logps [completions, positions] (token log-probabilities under the policy, with gradient), old_logps
    (under the sampling policy, no gradient), advantage [completions], mask [completions, positions]."""
    mask = mask.to(logps.dtype)
    totals = totals or Totals()
    log_ratio = logps - old_logps
    if level == "sequence":
        log_ratio = ((log_ratio * mask).sum(1) / mask.sum(1).clamp(min=1)).unsqueeze(1).expand_as(logps)
    elif level != "token":
        raise ValueError(f"unknown importance ratio level {level!r}")
    ratio = torch.exp(log_ratio)
    a = advantage.unsqueeze(1)
    clipped_ratio = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * a, clipped_ratio * a)
    kl = torch.zeros_like(logps)
    if beta:
        q = ref_logps - logps
        kl = torch.exp(q) - q - 1
        per_token = per_token + beta * kl
    completions = totals.completions or logps.shape[0]
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / completions
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (completions * max_length)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / max(totals.tokens or float(mask.sum()), 1.0)
    else:
        raise ValueError(f"unknown loss type {loss_type!r}")
    with torch.no_grad():
        active = ((ratio < 1 - eps_low) & (a < 0)) | ((ratio > 1 + eps_high) & (a > 0))
        stats = {
            "kl": float((kl * mask).sum()),
            "clipped": float((active.to(mask.dtype) * mask).sum()),
            "tokens": float(mask.sum()),
        }
    return loss, stats
