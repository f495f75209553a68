"""Pruning: a trial reports its validation loss at every validation, keyed by optimizer step (fine-tunes are
often a single epoch), and stops early when the study's pruner says it lags.

The trial finds its study through the storage alone: the sweeper passes the storage URL, study name and
trial number in the job's environment (hydra.job.env_set, so the trial's own config stays clean and
re-runs without pruning) and keeps the pruner settings in the study's attributes. So a trial reports
and is pruned the same way whether it runs in the sweeper's process or on another machine. The trial's
side, a Lightning callback, is in trial.py (this module stays free of torch: the sweeper imports it).
"""
from typing import Optional

ENV_STORAGE, ENV_STUDY, ENV_TRIAL = "FTLAB_OPTUNA_STORAGE", "FTLAB_OPTUNA_STUDY", "FTLAB_OPTUNA_TRIAL"
PRUNER_ATTR = "ftlab_pruner"  # study attribute: the pruner settings every worker builds the same pruner from


def make_pruner(settings: Optional[dict]):
    import optuna

    settings = settings or {"name": "none"}
    if settings["name"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings["n_startup_trials"],
                                           n_warmup_steps=settings["n_warmup_steps"])
    if settings["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, settings["n_warmup_steps"]))
    return optuna.pruners.NopPruner()


def job_environment(storage: Optional[str], study_name: str, number: int, more: Optional[dict] = None) -> list:
    """Overrides that give one trial's job its place in the study (the storage only when there is one to
    report to) and any `more` variables, such as the trackers' parent run."""
    env = {ENV_STUDY: study_name, ENV_TRIAL: number, **({ENV_STORAGE: storage} if storage else {}), **(more or {})}
    return [f"+hydra.job.env_set.{k}='{v}'" for k, v in env.items()]
