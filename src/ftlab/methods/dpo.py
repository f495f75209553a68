"""Direct Preference Optimization (method=dpo): raise the chosen answer's likelihood over the rejected one's, each
relative to the reference model (the same weights with the adapter switched off: no second copy in memory)."""

from dataclasses import dataclass

from ftlab.methods import METHODS, Method, rewards
from ftlab.utils.options import opt


@dataclass
class Options:
    name: str = "dpo"
    loss: str = opt("sigmoid", choices=["sigmoid", "ipo", "hinge"], example="method.loss=ipo")
    """The loss on the reward margin. sigmoid: DPO's -log sigmoid(beta * margin); ipo: the squared distance of the
    margin from 1 / (2 beta), robust when pairs are near-certain; hinge: max(0, 1 - beta * margin), SLiC-style."""
    beta: float = opt(0.1, gt=0, example="method.beta=0.1")
    """The reward scale. Higher: stay closer to the reference; lower: follow the preferences harder."""
    label_smoothing: float = opt(0.0, ge=0, lt=0.5, example="method.label_smoothing=0.1")
    """loss=sigmoid only: the assumed share of pairs whose labels are flipped (conservative DPO, for noisy
    preference data); 0: off."""


@METHODS.register
class DPO(Method):
    name = "dpo"
    summary = "prefer the chosen answer over the rejected one, relative to the base model (the adapter off)"
    Options = Options
    kind = "pair"
    reference = True
    metrics = rewards.METRICS
    ratios = staticmethod(rewards.ratios)

    def checks(self, cfg):
        m = cfg.method
        if m.label_smoothing and m.loss != "sigmoid":
            yield f"method.label_smoothing applies to method.loss=sigmoid only (got method.loss={m.loss})"

    def loss(self, options, forward, batch: dict):
        policy, count = forward.logps(batch)
        reference, _ = forward.logps(batch, reference=True)
        half = batch["pairs"]
        per, chosen, rejected = dpo_loss(
            policy[:half],
            policy[half:],
            reference[:half],
            reference[half:],
            options.beta,
            options.loss,
            options.label_smoothing,
        )
        return rewards.pair_sums(per, chosen, rejected, count[:half] > 0)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, loss: str, label_smoothing: float):
    """DPO (Rafailov et al. 2023, arXiv:2305.18290, eq. 7) on the margin h = log-ratio(chosen) - log-ratio(rejected),
    from each answer's summed token log-probabilities under the policy and the reference:
      sigmoid  -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)   (e: label smoothing, conservative DPO,
               Mitchell 2023, "A note on DPO with noisy preferences")
      ipo      (h - 1 / (2 beta))^2                                    (IPO, Azar et al. 2023, arXiv:2310.12036, eq. 17)
      hinge    max(0, 1 - beta h)                                      (SLiC, Zhao et al. 2023, arXiv:2305.10425)
    Returns (loss, chosen reward, rejected reward) per pair; rewards: beta x log-ratio."""
    import torch
    import torch.nn.functional as F

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
