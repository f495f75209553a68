"""A multirun's sweeper settings and search space, checked before Hydra starts any job: a bad space or an
unreachable tracker fails in a second, in one line, before a trial's dir exists. Each job's own config is
validated as it starts, so one bad combination fails that trial, not the sweep."""

from pathlib import Path
from typing import List, Optional

from ftlab.config.checks import validate_sweeper
from ftlab.config.compose import CONFIG_NAME, compose
from ftlab.sweeps import space
from ftlab.tracking import TRACKERS, chosen
from ftlab.utils.errors import ConfigError


def check(overrides: List[str], config_path: Optional[str], config_name: Optional[str]) -> None:
    """`overrides`, `config_path`, `config_name`: the multirun's command line, as Hydra parsed it; the sweeper plugin
    registered (cli.py)."""
    fixed, swept = space.split_arguments(overrides)
    cfg = compose(fixed, config_path, config_name or CONFIG_NAME, with_hydra=True)
    if cfg.hydra.sweeper._target_.endswith("FtlabOptunaSweeper"):
        sweeper = validate_sweeper(cfg.hydra.sweeper)
        space.parse(space.searched(sweeper.params, swept, fixed)[0])
        if sweeper.objective.startswith(("eval_", "base_eval_")) and not cfg.eval.after_train:
            raise ConfigError(
                f"hydra.sweeper.objective={sweeper.objective} is a score of the evaluation after "
                "training; add eval.after_train=true (and a test split, e.g. data.test_size=0.1)"
            )
        if sweeper.objective.startswith(("harness_", "base_harness_")) and not (
            cfg.eval.after_train and cfg.harness.tasks
        ):
            raise ConfigError(
                f"hydra.sweeper.objective={sweeper.objective} is a benchmark score after training; add "
                "eval.after_train=true and its task to harness.tasks, e.g. harness.tasks=[ftlab_facts]"
            )
        if sweeper.pruner.name != "none" and cfg.trainer.val_every_n_steps == 0:
            raise ConfigError(
                f"hydra.sweeper.pruner.name={sweeper.pruner.name} prunes on intermediate validation "
                "losses; set trainer.val_every_n_steps, e.g. trainer.val_every_n_steps=5"
            )
    for name in chosen(cfg.tracker):  # the sweeper opens the sweep's parent run before any trial
        TRACKERS.get(name).run(cfg.tracker, Path(".")).check()
