"""How a sweep trial's job learns its place in the sweep: the sweeper sets these variables through
hydra.job.env_set, so the trial's own config stays clean (it re-runs without the sweep) and a trial finds its
study through the storage alone, whether it runs in the sweeper's process or on another machine."""

import os
from dataclasses import dataclass
from typing import List, Optional

STORAGE, STUDY, TRIAL = "FTLAB_OPTUNA_STORAGE", "FTLAB_OPTUNA_STUDY", "FTLAB_OPTUNA_TRIAL"
MLFLOW_PARENT = "FTLAB_MLFLOW_PARENT_RUN"


@dataclass
class TrialEnv:
    study: str
    number: int
    storage: Optional[str] = None
    """The study's storage URL; None for an in-memory study (nothing to report to: no pruning)."""
    mlflow_parent: Optional[str] = None
    """The sweep's MLflow parent run, which the trial's run nests under."""

    @classmethod
    def from_environment(cls) -> Optional["TrialEnv"]:
        """The trial this process runs, or None outside a sweep."""
        if TRIAL not in os.environ:
            return None
        return cls(os.environ[STUDY], int(os.environ[TRIAL]), os.environ.get(STORAGE), os.environ.get(MLFLOW_PARENT))

    def overrides(self) -> List[str]:
        """The Hydra overrides that give the trial's job these variables."""
        env = {STUDY: self.study, TRIAL: self.number, STORAGE: self.storage, MLFLOW_PARENT: self.mlflow_parent}
        return [f"+hydra.job.env_set.{k}='{v}'" for k, v in env.items() if v is not None]
