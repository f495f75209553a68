"""Pruning: a trial reports its validation loss at every validation, keyed by optimizer step (fine-tunes are
often a single epoch), and stops early when the study's pruner says it lags.

The trial finds its study through the storage alone (env.py) and the pruner settings in the study's
attributes, so a trial reports and is pruned the same way whether it runs in the sweeper's process or on
another machine. The trial's side, a Lightning callback, is in trial.py (this module stays free of torch:
the sweeper imports it).
"""

from typing import Optional

import optuna

PRUNER_ATTR = "ftlab_pruner"  # study attribute: the pruner settings every worker builds the same pruner from


def make_pruner(settings: Optional[dict]):
    settings = settings or {"name": "none"}
    if settings["name"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings["n_startup_trials"], n_warmup_steps=settings["n_warmup_steps"]
        )
    if settings["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings["n_warmup_steps"]))
    return optuna.pruners.NopPruner()
