"""Pruning: a trial reports its validation loss (or the validation metric its objective names) at every
validation, keyed by optimizer step (fine-tunes are often a single epoch), and stops early when the study's pruner
says it lags.

The trial finds its study through the storage alone (env.py) and the pruner settings in the study's
attributes, so a trial reports and is pruned the same way whether it runs in the sweeper's process or on
another machine. The trial's side, a Lightning callback, is in trial.py (this module stays free of torch:
the sweeper imports it).
"""

from typing import Optional

import optuna

PRUNER_ATTR = "ftlab_pruner"  # study attribute: the pruner settings every worker builds the same pruner from
OBJECTIVE_ATTR = "ftlab_objective"  # study attribute: the metrics.json key the trials are ranked by


def reported_metric(objective: Optional[str], minimize: bool) -> Optional[str]:
    """The validation metric a trial reports at each validation, on its objective's scale: val/<x> for
    val_<x>_after (val/loss, or a preference method's val/accuracy); val/loss for another objective the study
    minimizes; None for one it maximizes that has no intermediate value (an eval_* score): reporting the loss
    to a maximizing pruner would stop the best trials, so those trials run to the end."""
    if objective and objective.startswith("val_") and objective.endswith("_after"):
        return "val/" + objective[len("val_") : -len("_after")]
    return "val/loss" if minimize else None


def make_pruner(settings: Optional[dict]):
    settings = settings or {"name": "none"}
    if settings["name"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings["n_startup_trials"], n_warmup_steps=settings["n_warmup_steps"]
        )
    if settings["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings["n_warmup_steps"]))
    return optuna.pruners.NopPruner()
