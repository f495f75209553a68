"""`python -m ftlab [overrides]`: validate first, then hand over to Hydra, which makes the run dir and runs.

Validation happens here, before Hydra starts, because Hydra creates the run dir before calling the task and
prints errors over several lines; a bad override should cost a second and leave nothing behind.
Shortcuts that rewrite the command line before Hydra sees it:
  --rerun DIR [overrides]   re-run a finished run from DIR/.hydra/config.yaml
  resume=DIR | resume=last  continue an interrupted run from its last checkpoint, with its saved config
Composing, validating and --help never import torch: the recipe is imported when a job starts.
"""

import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode

from ftlab.config.checks import validate, validate_sweeper
from ftlab.config.compose import CONFIG_NAME, compose, config_dir, setup
from ftlab.config.help import render
from ftlab.config.schema import RunConfig
from ftlab.train import rundir
from ftlab.utils import secrets
from ftlab.utils.errors import ConfigError, FtlabError, exit_on_error, fail
from ftlab.utils.files import new_run_dir

PROG = "ftlab"
SECTIONS = {f.name for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.type)}  # group=option words
# Hydra flags after which there is nothing of ours to check: its help, info, completion
_NO_PRECHECK = ("hydra_help", "info", "shell_completion")


def expand_shortcuts(argv: List[str]) -> List[str]:
    """Turn `--rerun DIR` and `resume=...` into Hydra's `--config-path DIR/.hydra --config-name config`."""
    argv = list(argv)
    source: Optional[str] = None
    if "--rerun" in argv:
        i = argv.index("--rerun")
        if i + 1 >= len(argv):
            raise ConfigError("--rerun needs a run dir, e.g. --rerun outputs/2026-11-23/10-00-00")
        source = argv[i + 1]
        del argv[i : i + 2]
    for i, arg in enumerate(argv):
        if arg.startswith("resume=") and arg != "resume=null":
            run_dir = rundir.find_resume_dir(arg.split("=", 1)[1])
            argv[i] = f"resume={run_dir}"
            source = str(run_dir)
    if source is None:
        return argv
    groups = [a for a in argv if a.partition("=")[0] in SECTIONS]
    if groups:
        section = groups[0].partition("=")[0]
        raise ConfigError(
            f"{groups[0]}: a saved run's config (--rerun, resume=) has no config groups to pick from; "
            f"set its keys instead, {section}.KEY=VALUE (python -m ftlab --help lists them)"
        )
    # keep ftlab's console and log-file layout, which the saved config (no hydra node) does not carry
    return [
        "--config-path",
        rundir.saved_config_dir(source),
        "--config-name",
        CONFIG_NAME,
        "hydra/job_logging=none",
        "hydra.job.name=ftlab",
    ] + argv


def _task_overrides(overrides: List[str]) -> List[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]


def precheck(args) -> None:
    """Compose and validate exactly what Hydra is about to run; raise ConfigError before any file exists."""
    validate(compose(_task_overrides(args.overrides), args.config_path, args.config_name or CONFIG_NAME))
    for o in args.overrides:
        if o.startswith("hydra.run.dir="):
            run_dir = Path(o.split("=", 1)[1])
            if run_dir.exists() and any(run_dir.iterdir()):
                raise ConfigError(
                    f"hydra.run.dir={run_dir} already holds files; ftlab never writes over a run: pick a new directory"
                )


def precheck_sweep(args) -> None:
    """A multirun's sweeper settings and search space, checked before Hydra starts any job (each job's own
    config is validated as it starts, so one bad combination fails that trial, not the sweep)."""
    # optuna (and the sweeper on it) loads only for a multirun
    import hydra_plugins.ftlab_optuna_sweeper.ftlab_optuna_sweeper as plugin
    from ftlab.sweeps import space

    # Hydra scans the hydra_plugins namespace for plugins, which an editable install hides: register it
    Plugins.instance().register(plugin.FtlabOptunaSweeper)
    fixed, swept = space.split_arguments(args.overrides)
    cfg = compose(fixed, args.config_path, args.config_name or CONFIG_NAME, with_hydra=True)
    if cfg.hydra.sweeper._target_.endswith("FtlabOptunaSweeper"):
        sweeper = validate_sweeper(cfg.hydra.sweeper)
        space.parse({**sweeper.params, **swept})
        if sweeper.objective.startswith(("eval_", "base_eval_")) and not cfg.eval.after_train:
            raise ConfigError(
                f"hydra.sweeper.objective={sweeper.objective} is a score of the evaluation after "
                "training; add eval.after_train=true (and a test split, e.g. data.test_size=0.1)"
            )
        if sweeper.pruner.name != "none" and cfg.trainer.val_every_n_steps == 0:
            raise ConfigError(
                f"hydra.sweeper.pruner.name={sweeper.pruner.name} prunes on intermediate validation "
                "losses; set trainer.val_every_n_steps, e.g. trainer.val_every_n_steps=5"
            )
    if cfg.tracker.name in ("mlflow", "all"):  # the sweeper opens the sweep's parent run before any trial
        from ftlab.tracking.mlflow_backend import MlflowBackend  # mlflow takes seconds to import

        MlflowBackend(cfg.tracker).check()


def prepare(argv: List[str]) -> List[str]:
    """The command line Hydra will run: shortcuts expanded, config validated, a fresh run dir claimed."""
    argv = secrets.take_from_overrides(expand_shortcuts(argv))  # before Hydra records the overrides anywhere
    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in _NO_PRECHECK):
        return argv
    if args.multirun:
        precheck_sweep(args)
        return argv
    precheck(args)
    if args.cfg is None and not any(o.startswith("hydra.run.dir=") for o in args.overrides):
        # Hydra's own outputs/DATE/TIME would put two runs started in the same second into one dir
        argv.append(f"hydra.run.dir={new_run_dir()}")
    return argv


def task(cfg) -> dict:
    """What Hydra runs for each job; returns the run's metrics, from which a sweeper reads its objective."""
    from ftlab.train.recipe import FineTune  # torch loads here, when a job starts, not for --help or --cfg

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = " ".join(["python -m ftlab", *hydra_cfg.overrides.task])
    try:  # FineTune validates the config (a multirun job's was not prechecked)
        return FineTune(cfg, run_dir=run_dir, command=command).run()
    except FtlabError as e:
        rundir.discard_unfinished(run_dir)  # also when the config failed, before run() claimed the dir
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweeper records the failure and goes on
            print(f"{PROG}: error: {e}", file=sys.stderr)
            raise
        fail(e, PROG)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(render())
        return
    with exit_on_error(PROG):
        argv = prepare(argv)
    setup()
    sys.argv = [sys.argv[0]] + argv  # hydra.main reads the (rewritten) command line from sys.argv
    hydra.main(config_path=config_dir(), config_name=CONFIG_NAME, version_base="1.3")(task)()
