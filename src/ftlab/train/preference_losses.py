"""The preference losses, per example, from sequence log-probabilities. Pure tensor functions: the formulas of the
papers, which tests/test_preference_losses.py works by hand.

Inputs are each answer's summed token log-probability under the policy (the model with its adapter) and, for the
methods with a reference, under the reference (the same weights with the adapter off); ORPO and SimPO take the
mean token log-probability instead. Each function returns (loss, chosen reward, rejected reward) per example; a
reward is what the method's loss compares, so the logged margin and accuracy mean what the method optimises.
"""

import torch
import torch.nn.functional as F


def dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, loss: str, label_smoothing: float):
    """DPO (Rafailov et al. 2023, arXiv:2305.18290, eq. 7) on the margin h = log-ratio(chosen) - log-ratio(rejected):
      sigmoid  -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)   (e: label smoothing, conservative DPO,
               Mitchell 2023, "A note on DPO with noisy preferences")
      ipo      (h - 1 / (2 beta))^2                                    (IPO, Azar et al. 2023, arXiv:2310.12036, eq. 17)
      hinge    max(0, 1 - beta h)                                      (SLiC, Zhao et al. 2023, arXiv:2305.10425)
    Rewards: beta x log-ratio."""
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss {loss!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def orpo(mean_chosen, mean_rejected, weight: float):
    """ORPO (Hong et al. 2024, arXiv:2403.07691, eqs. 6-8): the chosen answer's NLL (mean over its tokens) plus
    lambda x -log sigmoid(log odds(chosen) - log odds(rejected)), odds(y) = P(y) / (1 - P(y)) with P(y) the mean
    token probability exp(mean log P). Rewards: lambda x mean log P."""
    log_odds = (mean_chosen - mean_rejected) - (_log1m_exp(mean_chosen) - _log1m_exp(mean_rejected))
    losses = -mean_chosen - weight * F.logsigmoid(log_odds)
    return losses, weight * mean_chosen.detach(), weight * mean_rejected.detach()


def simpo(mean_chosen, mean_rejected, beta: float, gamma: float):
    """SimPO (Meng et al. 2024, arXiv:2405.14734, eq. 6): -log sigmoid(beta mean log P(chosen) - beta mean log
    P(rejected) - gamma). Rewards: beta x mean log P."""
    losses = -F.logsigmoid(beta * (mean_chosen - mean_rejected) - gamma)
    return losses, beta * mean_chosen.detach(), beta * mean_rejected.detach()


def kto(policy, ref, desirable, kl, beta: float, desirable_weight: float, undesirable_weight: float):
    """KTO (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 8) per example, with r = log-ratio of its answer and
    z0 = max(0, kl) the reference point (the batch's mean log-ratio on mismatched prompt/answer pairs, no
    gradient): desirable  w_D (1 - sigmoid(beta (r - z0))); undesirable  w_U (1 - sigmoid(beta (z0 - r))).
    Rewards: beta x r, in the chosen slot for desirable examples and the rejected slot for undesirable ones."""
    ratio = policy - ref
    z0 = kl.detach().clamp(min=0)
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratio))),
    )
    return losses, beta * ratio.detach()


def _log1m_exp(x):
    """log(1 - exp(x)) for x < 0, accurate near 0 and far below it; an answer the model is certain of (x = 0) is
    held just below certainty, where the log is finite."""
    x = x.clamp(max=-1e-6)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
