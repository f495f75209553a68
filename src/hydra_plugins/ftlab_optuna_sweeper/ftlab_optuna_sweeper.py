"""`hydra/sweeper=ftlab_optuna`: the config node Hydra instantiates, and the Sweeper class it names.

Its keys follow the hydra-optuna-sweeper plugin's (n_trials, storage, study_name, direction, sampler,
params with choice(...), interval(...), tag(log, interval(...))), on current Optuna; see ftlab.sweeps.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore

from ftlab.sweeps.sweeper import OptunaSweeper


class FtlabOptunaSweeper(OptunaSweeper):
    """Hydra accepts plugins defined under hydra_plugins only; the implementation is ftlab.sweeps.sweeper."""


@dataclass
class SamplerConf:
    name: str = "tpe"
    """tpe (default), random or grid (every combination of choice(...) params, each once)."""
    seed: Optional[int] = 42
    """Seeds the sampler: same seed, same sequence of suggestions."""


@dataclass
class PrunerConf:
    name: str = "none"
    """none, median or hyperband: stop trials whose validation loss lags the study's (needs
    trainer.val_every_n_steps > 0, since trials report at each validation)."""
    n_startup_trials: int = 2
    """median: trials that always run to the end before any is pruned."""
    n_warmup_steps: int = 0
    """Optimizer steps a trial runs before it can be pruned (hyperband: its minimum resource)."""


@dataclass
class FtlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.ftlab_optuna_sweeper.ftlab_optuna_sweeper.FtlabOptunaSweeper"
    n_trials: int = 10
    """Trials in the study in all, across re-runs and workers: a re-run runs only the missing ones."""
    storage: Optional[str] = "sqlite:///outputs/sweeps/optuna.db"
    """Optuna storage URL: the SQLite file by default; postgresql://... for workers on several machines."""
    study_name: str = "ftlab"
    """The study, within `storage`: the same name continues it."""
    direction: str = "minimize"
    """minimize or maximize `objective`."""
    objective: str = "val_loss_after"
    """The metrics.json value a trial reports: val_loss_after by default, or with eval.after_train=true an
    evaluation score such as eval_rouge_l (direction: maximize)."""
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    max_failure_rate: float = 0.5
    """Stop the sweep when more than this share of its finished trials failed."""
    params: Dict[str, str] = field(default_factory=dict)
    """The search space: key: choice(a, b, ...) | interval(lo, hi) | tag(log, interval(lo, hi)) | range(...)."""


ConfigStore.instance().store(group="hydra/sweeper", name="ftlab_optuna", node=FtlabOptunaSweeperConf,
                             provider="ftlab")
