"""The trial's side of pruning (see pruning.py): a Lightning callback that reports to the trial's study."""

from typing import Optional

import lightning as L
import optuna
from lightning.pytorch.trainer.states import TrainerFn

from ftlab.sweeps.env import TrialEnv
from ftlab.sweeps.pruning import OBJECTIVE_ATTR, PRUNER_ATTR, make_pruner, reported_metric
from ftlab.utils.console import info


class Pruning(L.Callback):
    """Reports the objective's validation metric (pruning.reported_metric) at each validation during fit (rank 0);
    asks the pruner; every rank stops when told to."""

    def __init__(self, storage: str, study_name: str, number: int):
        probe = optuna.load_study(study_name=study_name, storage=storage)
        self.study = optuna.load_study(
            study_name=study_name, storage=storage, pruner=make_pruner(probe.user_attrs.get(PRUNER_ATTR))
        )
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        self.trial = optuna.trial.Trial(self.study, trial_id)
        self.number, self.pruned_at = number, None
        minimize = self.study.direction == optuna.study.StudyDirection.MINIMIZE
        self.metric = reported_metric(probe.user_attrs.get(OBJECTIVE_ATTR), minimize)

    @classmethod
    def for_trial(cls, trial: Optional[TrialEnv]) -> Optional["Pruning"]:
        if trial is None or trial.storage is None:  # not a trial, or one of an in-memory study (nothing to report to)
            return None
        return cls(trial.storage, trial.study, trial.number)

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return  # the validations before and after training are not intermediate results
        if self.metric is None or self.metric not in trainer.callback_metrics:
            return  # nothing on the objective's scale to report: the trial runs to the end
        value = float(trainer.callback_metrics[self.metric])  # already over every rank's examples
        prune = False
        if trainer.is_global_zero:  # one report per validation, one decision, which every rank obeys
            self.trial.report(value, step=trainer.global_step)
            prune = self.trial.should_prune()
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned_at = trainer.global_step
            trainer.should_stop = True
            info(f"trial {self.number} pruned at step {trainer.global_step} ({self.metric} {value:.4f} lags the study)")
