"""loss.png: the training and validation loss curves of a run, drawn from its logs/metrics.csv."""

import csv
from pathlib import Path

# a Figure of its own, not pyplot: drawing a file must not switch the backend of a notebook importing ftlab
from matplotlib.figure import Figure


def plot_losses(run_dir: Path) -> None:
    """loss.png from logs/metrics.csv: training loss per step, validation loss where measured."""
    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    series = {k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k)] for k in ("train/loss", "val/loss")}
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for name, points in series.items():
        if points:  # validation is measured rarely: dots, so no straight line suggests a path between them
            ax.plot(*zip(*points), **({"marker": "o", "linestyle": ":"} if name == "val/loss" else {}), label=name)
    values = [v for points in series.values() for _, v in points]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # a fine-tune often spans decades of loss; linear would flatten the end
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
