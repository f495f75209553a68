"""Odds Ratio Preference Optimization (method=orpo): SFT on the chosen answers plus a penalty on the rejected ones'
odds. No reference forward pass, so a step costs what SFT on both answers costs."""

from dataclasses import dataclass

from ftlab.methods import METHODS, Method, rewards
from ftlab.utils.options import opt


@dataclass
class Options:
    name: str = "orpo"
    odds_ratio_weight: float = opt(0.1, gt=0, example="method.odds_ratio_weight=0.1")
    """lambda, the weight of the odds-ratio term added to the chosen answers' SFT loss: higher pushes the rejected
    answers down harder, at some cost to the SFT loss."""


@METHODS.register
class ORPO(Method):
    name = "orpo"
    summary = "SFT on the chosen answers plus an odds-ratio penalty on the rejected ones; no reference"
    Options = Options
    kind = "pair"
    metrics = rewards.METRICS
    ratios = staticmethod(rewards.ratios)

    def loss(self, options, forward, batch: dict):
        chosen, rejected, real = rewards.mean_logps(forward, batch)
        return rewards.pair_sums(*orpo_loss(chosen, rejected, options.odds_ratio_weight), real)


def orpo_loss(mean_chosen, mean_rejected, weight: float):
    """ORPO (Hong et al. 2024, arXiv:2403.07691, eqs. 6-8): the chosen answer's NLL (mean over its tokens) plus
    lambda x -log sigmoid(log odds(chosen) - log odds(rejected)), odds(y) = P(y) / (1 - P(y)) with P(y) the mean
    token probability exp(mean log P). Returns (loss, chosen reward, rejected reward) per pair; rewards: lambda x
    mean log P."""
    import torch.nn.functional as F

    log_odds = (mean_chosen - mean_rejected) - (_log1m_exp(mean_chosen) - _log1m_exp(mean_rejected))
    losses = -mean_chosen - weight * F.logsigmoid(log_odds)
    return losses, weight * mean_chosen.detach(), weight * mean_rejected.detach()


def _log1m_exp(x):
    """log(1 - exp(x)) for x < 0, accurate near 0 and far below it; an answer the model is certain of (x = 0) is
    held just below certainty, where the log is finite."""
    import torch

    x = x.clamp(max=-1e-6)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
