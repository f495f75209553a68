"""Simple Preference Optimization (method=simpo): the reward is an answer's mean token log-probability
(length-normalised), with a target margin. No reference forward pass."""

from dataclasses import dataclass

from ftlab.methods import METHODS, Method, rewards
from ftlab.utils.options import opt


@dataclass
class Options:
    name: str = "simpo"
    beta: float = opt(2.0, gt=0, example="method.beta=2.0")
    """The reward scale; the paper's range is 2.0-2.5."""
    gamma: float = opt(1.0, ge=0, example="method.gamma=1.0")
    """The target reward margin the chosen answer must beat the rejected one by; the paper keeps gamma / beta around
    0.5."""


@METHODS.register
class SimPO(Method):
    name = "simpo"
    summary = "a length-normalised reward margin between the chosen and the rejected answer; no reference"
    Options = Options
    kind = "pair"
    metrics = rewards.METRICS
    ratios = staticmethod(rewards.ratios)

    def loss(self, options, forward, batch: dict):
        chosen, rejected, real = rewards.mean_logps(forward, batch)
        return rewards.pair_sums(*simpo_loss(chosen, rejected, options.beta, options.gamma), real)


def simpo_loss(mean_chosen, mean_rejected, beta: float, gamma: float):
    """SimPO (Meng et al. 2024, arXiv:2405.14734, eq. 6): -log sigmoid(beta mean log P(chosen) - beta mean log
    P(rejected) - gamma). Returns (loss, chosen reward, rejected reward) per pair; rewards: beta x mean log P."""
    import torch.nn.functional as F

    losses = -F.logsigmoid(beta * (mean_chosen - mean_rejected) - gamma)
    return losses, beta * mean_chosen.detach(), beta * mean_rejected.detach()
