"""Kahneman-Tversky Optimization (method=kto): learn from unpaired thumbs-up/down answers, relative to the
reference model. Each batch of B answers comes with B mismatched prompt/answer pairs (data/kinds/judged.py), whose
log-ratio is the reference point."""

from dataclasses import dataclass

from ftlab.methods import METHODS, Method, rewards
from ftlab.utils.options import opt


@dataclass
class Options:
    name: str = "kto"
    beta: float = opt(0.1, gt=0, example="method.beta=0.1")
    """The reward scale. Higher: stay closer to the reference."""
    desirable_weight: float = opt(1.0, gt=0)
    """Weight of the desirable examples' loss; raise the weight of the rarer kind so that weight x count is about
    equal."""
    undesirable_weight: float = opt(1.0, gt=0)
    """Weight of the undesirable examples' loss; raise it when they are the fewer."""


@METHODS.register
class KTO(Method):
    name = "kto"
    summary = "unpaired good and bad answers, relative to the base model (the adapter off)"
    Options = Options
    kind = "judged"
    reference = True
    metrics = rewards.METRICS
    ratios = staticmethod(rewards.ratios)

    def loss(self, options, forward, batch: dict):
        import torch

        policy, count = forward.logps(batch)
        reference, _ = forward.logps(batch, reference=True)
        desirable = batch["desirable"]
        half = desirable.shape[0]
        real = count[:half] > 0  # a filler row (a rank with no share of a short last batch) scores nothing
        kl = (policy[half:] - reference[half:]).detach()
        kl = (kl * real).sum() / real.sum().clamp(min=1)
        per, reward = kto_loss(
            policy[:half],
            reference[:half],
            desirable,
            kl,
            options.beta,
            options.desirable_weight,
            options.undesirable_weight,
        )
        good, bad = desirable & real, ~desirable & real
        correct = torch.where(desirable, reward > 0, reward < 0) & real
        sums = {
            "loss": per[real].sum().detach(),
            "chosen_reward": reward[good].sum(),
            "rejected_reward": reward[bad].sum(),
            "correct": correct.sum(),
            "units": real.sum(),
            "chosen": good.sum(),
            "rejected": bad.sum(),
        }
        return (per * real).sum(), {k: torch.as_tensor(v, dtype=torch.float64) for k, v in sums.items()}


def kto_loss(policy, ref, desirable, kl, beta: float, desirable_weight: float, undesirable_weight: float):
    """KTO (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 8) per example, with r = log-ratio of its answer and
    z0 = max(0, kl) the reference point (the batch's mean log-ratio on mismatched prompt/answer pairs, no
    gradient): desirable  w_D (1 - sigmoid(beta (r - z0))); undesirable  w_U (1 - sigmoid(beta (z0 - r))).
    Returns (loss, reward) per example; rewards: beta x r (logged as chosen for desirable examples, rejected for
    undesirable ones)."""
    import torch

    ratio = policy - ref
    z0 = kl.detach().clamp(min=0)
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - ratio))),
    )
    return losses, beta * ratio.detach()
