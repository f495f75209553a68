"""`python -m ftlab [overrides]`: validate first, then hand over to Hydra, which makes the run dir and runs.

Validation happens here, before Hydra starts, because Hydra creates the run dir before calling the task and
prints errors over several lines; a bad override should cost a second and leave nothing behind.
Shortcuts that rewrite the command line before Hydra sees it:
  --rerun DIR [overrides]   re-run a finished run from DIR/.hydra/config.yaml
  resume=DIR | resume=last  continue an interrupted run from its last checkpoint, with its saved config
"""
import os
import sys
from pathlib import Path
from typing import List, Optional

from ftlab.errors import ConfigError, FtlabError

# Hydra flags after which there is nothing of ours to check: its help, info, completion
_NO_PRECHECK = ("hydra_help", "info", "shell_completion")


def fail(error: FtlabError) -> None:
    """Report a user-fixable error as one line, or with its traceback when HYDRA_FULL_ERROR=1 asks for it; exit
    2 for a bad config or command line, 1 for anything else."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"ftlab: error: {error}", file=sys.stderr)
    sys.exit(2 if isinstance(error, ConfigError) else 1)


def expand_shortcuts(argv: List[str]) -> List[str]:
    """Turn `--rerun DIR` and `resume=...` into Hydra's `--config-path DIR/.hydra --config-name config`."""
    from ftlab.artifacts import find_resume_dir, saved_config_dir

    argv = list(argv)
    source: Optional[str] = None
    if "--rerun" in argv:
        i = argv.index("--rerun")
        if i + 1 >= len(argv):
            raise FtlabError("--rerun needs a run dir, e.g. --rerun outputs/2026-11-23/10-00-00")
        source = argv[i + 1]
        del argv[i:i + 2]
    for i, arg in enumerate(argv):
        if arg.startswith("resume=") and arg != "resume=null":
            run_dir = find_resume_dir(arg.split("=", 1)[1], Path("outputs"))
            argv[i] = f"resume={run_dir}"
            source = str(run_dir)
    if source is None:
        return argv
    # keep ftlab's console and log-file layout, which the saved config (no hydra node) does not carry
    return ["--config-path", saved_config_dir(source), "--config-name", "config",
            "hydra/job_logging=none", "hydra.job.name=ftlab"] + argv


def precheck(args) -> None:
    """Compose and validate exactly what Hydra is about to run; raise ConfigError before any file exists."""
    from ftlab.checks import describe_compose_error, validate
    from ftlab.configure import compose

    task_overrides = [o for o in args.overrides if not o.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    try:
        cfg = compose(task_overrides, config_path=args.config_path, config_name=args.config_name or "config")
    except FtlabError:
        raise
    except Exception as e:  # Hydra's composition errors: bad override, unknown key or group option
        raise ConfigError(describe_compose_error(e)) from None
    validate(cfg)
    for o in args.overrides:
        if o.startswith("hydra.run.dir="):
            run_dir = Path(o.split("=", 1)[1])
            if run_dir.exists() and any(run_dir.iterdir()):
                raise ConfigError(f"hydra.run.dir={run_dir} already holds files; ftlab never writes over "
                                  "a run: pick a new directory")


def precheck_sweep(args) -> None:
    """A multirun's sweeper settings and search space, checked before Hydra starts any job (each job's own
    config is validated as it starts, so one bad combination fails that trial, not the sweep)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ftlab.checks import describe_compose_error
    from ftlab.configure import config_dir, setup
    from ftlab.sweeps import space, sweeper

    setup()
    try:
        fixed, swept = space.split_arguments(args.overrides)
        directory = str(Path(args.config_path or config_dir()).expanduser().resolve())
        with initialize_config_dir(config_dir=directory, version_base="1.3"):
            cfg = hydra_compose(config_name=args.config_name or "config", overrides=fixed, return_hydra_config=True)
    except FtlabError:
        raise
    except Exception as e:  # Hydra's composition errors: bad override, unknown key or group option
        raise ConfigError(describe_compose_error(e)) from None
    if cfg.hydra.sweeper._target_.endswith("FtlabOptunaSweeper"):
        sweeper.check_settings(cfg.hydra.sweeper)
        space.parse({**cfg.hydra.sweeper.params, **swept})
        objective = cfg.hydra.sweeper.objective
        if objective.startswith(("eval_", "base_eval_")) and not cfg.eval.after_train:
            raise ConfigError(f"hydra.sweeper.objective={objective} is a score of the evaluation after training; "
                              "add eval.after_train=true (and a test split, e.g. data.test_size=0.1)")
        if cfg.hydra.sweeper.pruner.name != "none" and cfg.trainer.val_every_n_steps == 0:
            raise ConfigError(f"hydra.sweeper.pruner.name={cfg.hydra.sweeper.pruner.name} prunes on intermediate "
                              "validation losses; set trainer.val_every_n_steps, e.g. trainer.val_every_n_steps=5")
    if cfg.tracker.name in ("mlflow", "all"):  # the sweeper opens the sweep's parent run before any trial
        from ftlab.tracking.mlflow_backend import MlflowBackend

        MlflowBackend(cfg.tracker).check()


def prepare(argv: List[str]) -> List[str]:
    """The command line Hydra will run: shortcuts expanded, config validated, a fresh run dir claimed."""
    from hydra._internal.utils import get_args_parser

    from ftlab import secrets
    from ftlab.artifacts import new_run_dir

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
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ftlab.finetune import FineTune

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = " ".join(["python -m ftlab", *hydra_cfg.overrides.task])
    try:  # FineTune validates the config (a multirun job's was not prechecked)
        return FineTune(cfg, run_dir=run_dir, command=command).run()
    except FtlabError as e:
        from ftlab.artifacts import discard_unfinished

        discard_unfinished(run_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweeper records the failure and goes on
            print(f"ftlab: error: {e}", file=sys.stderr)
            raise
        fail(e)


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        from ftlab.help import render

        print(render())
        return
    try:
        argv = prepare(argv)
    except FtlabError as e:
        fail(e)
    import hydra

    from ftlab.configure import config_dir, setup

    setup()
    sys.argv = [sys.argv[0]] + argv  # hydra.main reads the (rewritten) command line from sys.argv
    hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")(task)()
