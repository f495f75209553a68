"""What the preference methods log: per-example losses and rewards summed into numbers that add up over
micro-batches and ranks, and the means logged from them. A reward is what the method's loss compares, so the
margin and accuracy mean what the method optimises. Not a method: the methods of pairs and of KTO share it."""

from ftlab.methods import Metric

METRICS = {
    "accuracy": Metric("preference accuracy", percent=True, validated=True),
    "margin": Metric("reward margin", validated=True),
    "rewards_chosen": Metric("chosen reward"),
    "rewards_rejected": Metric("rejected reward"),
}


def mean_logps(forward, batch: dict) -> tuple:
    """(chosen, rejected) answers' mean token log-probabilities under the adapter model, and which pairs are real
    (not a filler row, for a rank with no share of a short last batch): what the length-normalised losses take."""
    policy, count = forward.logps(batch)
    mean, half = policy / count.clamp(min=1), batch["pairs"]
    return mean[:half], mean[half:], count[:half] > 0


def pair_sums(per, chosen, rejected, real) -> tuple:
    """(loss summed over the real pairs, sums) from each pair's loss and rewards; `real`: not a filler row (a rank
    with no share of a short last batch)."""
    import torch  # here, not above: composing a config reads this package, and must not load torch

    n = real.sum()
    sums = {
        "loss": per[real].sum().detach(),
        "chosen_reward": chosen[real].sum(),
        "rejected_reward": rejected[real].sum(),
        "correct": ((chosen > rejected) & real).sum(),
        "units": n,
        "chosen": n,
        "rejected": n,
    }
    return (per * real).sum(), {k: torch.as_tensor(v, dtype=torch.float64) for k, v in sums.items()}


def ratios(sums: dict) -> dict:
    """Means from the sums: loss and accuracy over examples, rewards over the answers of each kind."""
    chosen = sums["chosen_reward"] / max(sums["chosen"], 1)
    rejected = sums["rejected_reward"] / max(sums["rejected"], 1)
    n = max(sums["units"], 1)
    return dict(
        loss=sums["loss"] / n,
        rewards_chosen=chosen,
        rewards_rejected=rejected,
        margin=chosen - rejected,
        accuracy=sums["correct"] / n,
    )
