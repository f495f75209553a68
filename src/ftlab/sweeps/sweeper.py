"""The Optuna sweeper behind `hydra/sweeper=ftlab_optuna` (registered in hydra_plugins.ftlab_optuna_sweeper);
its options are declared in config/schema.py (SweeperOptions). How workers share a study is in workers.py,
pruning in pruning.py, the report in summary.py.

One study in a storage (a SQLite file by default, any database URL for several workers) holds the sweep:

  - n_trials counts the study's trials in all, so re-running a killed sweep with the same command runs only
    the missing ones; a trial whose worker died (workers.py: by pid here, by heartbeat elsewhere) is marked
    FAILED first.
  - each trial asks the sampler for params, runs as a normal Hydra job (its own run dir under the sweep dir,
    numbered by the trial), and reports the `objective` value from its metrics.
  - n_jobs trials are asked at once and launched as one batch through hydra/launcher, which runs them one after
    another (basic) or in parallel (joblib, submitit); each is recorded when its batch returns.
  - a trial that raises (out of memory, NaN loss, an invalid sampled combination) is recorded FAILED with
    its reason and the sweep goes on, until failures pass max_failure_rate of n_trials.
"""

import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import List, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from ftlab.config.checks import validate_sweeper
from ftlab.sweeps import parent_run, pruning, space, summary, workers
from ftlab.sweeps.env import TrialEnv
from ftlab.utils.errors import ConfigError, first_line

log = logging.getLogger("ftlab.sweep")  # its own stdout handler: not into a trial's train.log (see sweep())


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        storage: Optional[str],
        study_name: str,
        direction: str,
        objective: str,
        sampler: DictConfig,
        pruner: DictConfig,
        max_failure_rate: float,
        params: DictConfig,
    ):
        super().__init__()
        self.n_trials, self.n_jobs, self.storage_url, self.study_name = n_trials, n_jobs, storage, study_name
        self.direction, self.objective, self.max_failure_rate = direction, objective, max_failure_rate
        self.sampler = sampler
        self.pruner = OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) else dict(pruner)
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ── the sweep ──────────────────────────────────────────────────────────────────────────────────
    def sweep(self, arguments: List[str]) -> list:
        _console()
        fixed, swept = space.split_arguments(arguments)
        params, pinned = space.searched(self.params, swept, fixed)
        if pinned:
            log.info(f"ftlab sweep: pinned on the command line, not searched: {' '.join(pinned)}")
        distributions = space.parse(params)
        validate_sweeper(self.config.hydra.sweeper)
        with workers.budget_lock(self.storage_url, self.study_name):  # workers starting together: one at a time
            study = self._study(params)
            workers.fail_orphans(study, log)
            parent = parent_run.start(self.config, study)  # one parent run for all trials, all workers
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            f"ftlab sweep: study '{self.study_name}' in {self.storage_url}, {self._count(study)} of "
            f"{self.n_trials} trials already there; trial run dirs in {sweep_dir}"
        )
        returns = []
        while True:
            # counting and asking under one lock: workers sharing the study never run more than n_trials, and
            # the trials asked together get consecutive numbers, which the launcher turns into job numbers
            with workers.budget_lock(self.storage_url, self.study_name):
                left = self.n_trials - self._count(study)
                if left <= 0:
                    break
                if self._failed(study) > self.max_failure_rate * self.n_trials:
                    log.info(
                        f"ftlab sweep: stopping, {self._failed(study)} trials failed (more than "
                        f"hydra.sweeper.max_failure_rate={self.max_failure_rate} of {self.n_trials})"
                    )
                    break
                trials = [study.ask(distributions) for _ in range(min(self.n_jobs, left))]
                for trial in trials:
                    trial.set_user_attr(workers.WORKER, workers.me())
                    trial.set_user_attr(workers.BEAT, time.time())
            returns += self._run(study, trials, fixed, parent)
        self._summary(study)
        parent_run.finish(self.config, parent, study, self.objective)
        return returns

    def _run(self, study, trials: list, fixed: List[str], parent) -> list:
        """The trials as Hydra jobs, launched together and numbered by trial; each result is recorded."""
        jobs, returns = [], []
        for trial in trials:
            overrides = fixed + [f"{k}={v}" for k, v in trial.params.items()]
            trial.set_user_attr(summary.COMMAND, " ".join(overrides))
            # pruning reaches the trial through the storage (an in-memory study: no pruning); trackers nest it
            overrides += TrialEnv(self.study_name, trial.number, self.storage_url, parent).overrides()
            try:  # a launcher fails its whole batch on one job whose overrides do not compose: fail that one alone
                self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                jobs.append((trial, overrides))
            except Exception as e:
                returns.append(JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=e))
                self._record(study, trial, returns[-1], 0.0)
        for batch in _consecutive(jobs):
            started = time.perf_counter()
            launched = [overrides for _, overrides in batch]
            try:
                with ExitStack() as beating:
                    for trial, _ in batch:
                        beating.enter_context(workers.Heartbeat(trial))
                    results = self.launcher.launch(launched, initial_job_idx=batch[0][0].number)
            except Exception as e:  # the launcher lost the batch, e.g. a job's process was killed
                results = [JobReturn(overrides=job, status=JobStatus.FAILED, _return_value=e) for job in launched]
            seconds = time.perf_counter() - started  # the batch's: its jobs report no time of their own
            for (trial, _), result in zip(batch, results):
                returns.append(result)
                self._record(study, trial, result, seconds)
        return returns

    def _record(self, study, trial, result, seconds: float) -> None:
        shown = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        run_dir = Path(result.hydra_cfg.hydra.runtime.output_dir) if result.hydra_cfg else None
        if run_dir is not None and run_dir.is_dir():  # a failed run removes its dir: nothing to point at
            trial.set_user_attr("run_dir", str(run_dir))
        if result.status == JobStatus.COMPLETED and result.return_value.get("pruned_at_step") is not None:
            study.tell(trial, state=TrialState.PRUNED)
            log.info(
                f"ftlab sweep: trial {trial.number}: {shown} PRUNED at step "
                f"{result.return_value['pruned_at_step']} ({seconds:.0f}s)"
            )
            return
        if result.status == JobStatus.COMPLETED:
            value = result.return_value[self.objective]
            study.tell(trial, value)
            log.info(f"ftlab sweep: trial {trial.number}: {shown} -> {self.objective}={value:.4f} ({seconds:.0f}s)")
            return
        error = result._return_value
        reason = first_line(error)
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {reason}")
        study.tell(trial, state=TrialState.FAIL)
        log.info(f"ftlab sweep: trial {trial.number}: {shown} FAILED ({type(error).__name__}: {reason})")

    def _summary(self, study) -> None:
        """The report (summary.py) into the sweep dir, and its table on the console."""
        try:
            text, files = summary.write(study)
        except Exception as e:  # the trials are safe in the storage; `python -m ftlab.sweeps report` retries
            log.info(
                f"ftlab sweep: could not write the report ({type(e).__name__}: {e}); the trials are in "
                f"{self.storage_url}: python -m ftlab.sweeps report --study {self.study_name}"
            )
            return
        log.info(
            f"ftlab sweep: {self._count(study)} of {self.n_trials} trials in the study\n{text}\n"
            f"report and plots: {', '.join(str(f) for f in files)}"
        )

    # ── study and storage ──────────────────────────────────────────────────────────────────────────
    def _study(self, params: dict):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = None
        if self.storage_url:
            storage = optuna.storages.RDBStorage(self.storage_url)
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            direction=self.direction,
            sampler=self._sampler(params),
            pruner=pruning.make_pruner(self.pruner),
            load_if_exists=True,
        )
        study.set_user_attr(pruning.PRUNER_ATTR, self.pruner)  # for trials running elsewhere
        study.set_user_attr(pruning.OBJECTIVE_ATTR, self.objective)
        study.set_user_attr(summary.SWEEP_DIR, str(self.config.hydra.sweep.dir))
        return study

    def _sampler(self, params: dict):
        name, seed = self.sampler.name, self.sampler.seed
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        grid = {key: _grid_values(key, text) for key, text in params.items()}
        size = 1
        for values in grid.values():
            size *= len(values)
        if size < self.n_trials:
            log.info(f"ftlab sweep: the grid has {size} points; running {size} trials, not {self.n_trials}")
            self.n_trials = size
        return _grid_sampler(grid, seed)

    def _count(self, study) -> int:
        return len(study.get_trials(deepcopy=False))

    def _failed(self, study) -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def _console() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _consecutive(jobs: list) -> list:
    """(trial, overrides) pairs in runs of consecutive trial numbers. A launcher numbers a batch's jobs
    initial_job_idx + i, and that number names the trial's run dir (hydra.job.num). Trials asked under the budget
    lock are consecutive; a job that did not compose, or another worker on a database without a lock, leaves a gap."""
    runs: list = []
    for trial, overrides in jobs:
        if runs and trial.number == runs[-1][-1][0].number + 1:
            runs[-1].append((trial, overrides))
        else:
            runs.append([(trial, overrides)])
    return runs


def _grid_sampler(grid: dict, seed):
    class Grid(optuna.samplers.GridSampler):
        """Optuna's grid sampler stops the study once every point ran, which only works inside optimize();
        this sweeper asks and tells by itself and stops at the grid's size instead."""

        def after_trial(self, study, trial, state, values):
            pass

    return Grid(grid, seed=seed)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _grid_values(key: str, text: str) -> list:
    """The values a grid sampler walks for one param: only choice(...) and range(...) have a finite list."""
    dist = space.parse({key: text})[key]
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    raise ConfigError(
        f"hydra.sweeper.params.{key}={text}: the grid sampler needs choice(...) or range(...), "
        "not a continuous interval"
    )
