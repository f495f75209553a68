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
from omegaconf import OmegaConf

from ftlab.config.checks import validate
from ftlab.config.compose import CONFIG_NAME, compose, config_dir, setup
from ftlab.config.help import render
from ftlab.config.schema import RunConfig
from ftlab.train import rundir
from ftlab.utils import ranks, secrets
from ftlab.utils.errors import ConfigError, FtlabError, exit_code, exit_on_error, fail

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
    if "resume=auto" in argv:
        argv, source = resume_auto(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("resume=") and arg != "resume=null":
            checkpoint = rundir.resume_checkpoint(arg.split("=", 1)[1])
            from ftlab.train import checkpoints  # torch: only a resumed run, which is about to train, loads it

            checkpoints.read(checkpoint)  # a damaged one fails here, in one line naming the one to go back to
            argv[i] = f"resume={checkpoint}"
            source = str(rundir.run_dir_of(checkpoint))
    if source is None or "--config-path" in argv:  # nothing to expand, or expanded already: a rank Lightning started
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


def resume_auto(argv: List[str]) -> tuple:
    """resume=auto: continue the newest run of this same config that has a checkpoint (its saved config, resume=
    its dir, Hydra's own options kept); else start fresh. A requeued job re-running its command lands here."""
    fresh = [a for a in argv if a != "resume=auto"]
    args = get_args_parser().parse_args(fresh)
    found = rundir.find_same_config(OmegaConf.to_container(_compose_task(args)))
    if found is None:
        print(f"{PROG}: resume=auto: no run of this config has a checkpoint; starting fresh", file=sys.stderr)
        return fresh, None
    print(f"{PROG}: resume=auto: continuing {found}", file=sys.stderr)
    kept = [a for a in args.overrides if a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    return kept + [f"resume={found}"], None


def _task_overrides(overrides: List[str]) -> List[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]


def search_path(args) -> List[str]:
    """hydra.searchpath as Hydra will see it, --config-dir included: the folders of a user's own config options
    (a sweep preset, a data group), so that ftlab's checks compose them as Hydra will."""
    words = [o.lstrip("+") for o in args.overrides if o.lstrip("+").startswith("hydra.searchpath=")]
    if not args.config_dir:
        return words[-1:]
    own = f"file://{Path(args.config_dir).expanduser().resolve()}"
    given = words[-1].split("=", 1)[1].strip().strip("[]") if words else ""
    return [f"hydra.searchpath=[{own}{',' + given if given else ''}]"]


def _compose_task(args):
    """The task config of Hydra's parsed command line `args` (its hydra.* overrides left to Hydra, bar the search
    path its config options come from)."""
    overrides = _task_overrides(args.overrides) + search_path(args)
    return compose(overrides, args.config_path, args.config_name or CONFIG_NAME)


def precheck(args):
    """Compose and validate exactly what Hydra is about to run; raise ConfigError before any file exists.
    Returns the validated config."""
    cfg = validate(_compose_task(args))
    if not ranks.is_main():  # rank 0 made the run dir the others are given; it is theirs to share
        return cfg
    for o in args.overrides:
        if o.startswith("hydra.run.dir="):
            run_dir = Path(o.split("=", 1)[1])
            prepared = args.config_path and Path(args.config_path).resolve() == (run_dir / ".hydra").resolve()
            if run_dir.exists() and any(run_dir.iterdir()) and not prepared:  # prepared: see run_trial_alone
                raise ConfigError(
                    f"hydra.run.dir={run_dir} already holds files; ftlab never writes over a run: pick a new directory"
                )
    return cfg


def traps(args) -> None:
    """Command lines Hydra would take and run otherwise than meant: refused (or noted) in one line with the fix."""
    words = args.overrides
    for i, word in enumerate(words):
        if "=" not in word and not word.startswith("~"):  # the shell split a value at a space
            before = f"'{words[i - 1]} {word}'" if i else f"'key={word} ...'"
            raise ConfigError(f"'{word}' is not key=value; a value with spaces must be quoted as one word: {before}")
    keys = [w.lstrip("+~").partition("=")[0] for w in words]
    if args.multirun and args.cfg:
        raise ConfigError(
            f"--cfg {args.cfg} with -m: a sweep has no one config to show; drop -m to see a trial's "
            "(the search space is hydra.sweeper.params, shown by --cfg hydra)"
        )
    if not args.multirun and not args.cfg:
        searches = [w for w, k in zip(words, keys) if k == "sweep" and not w.endswith("=null")]
        sweeper = [w for w, k in zip(words, keys) if k.startswith("hydra.sweeper.")]
        if searches and not sweeper and _replays_a_trial(args, keys):
            return
        if searches or sweeper:
            raise ConfigError(
                f"{(searches or sweeper)[0]} sets up a sweep, which runs only with -m; without it this would be one "
                f"run: python -m ftlab -m {' '.join(words)}"
            )


def _replays_a_trial(args, keys: List[str]) -> bool:
    """`sweep=NAME` without -m that sets every key the preset searches: one run with the preset's settings, as the
    command a sweep's summary gives for its best trial. Not a sweep forgotten, so not refused."""
    searched = compose(_task_overrides(args.overrides) + search_path(args), with_hydra=True).hydra.sweeper.params
    return bool(searched) and set(searched) <= set(keys)


def warnings_for(cfg, args) -> List[str]:
    """What a command line Hydra runs as written may not mean: a warning each, naming the fix (the run goes on)."""
    out = []
    t = cfg.trainer
    if t.accelerator == "cpu" and t.devices > 1:
        import torch  # only here: asking for several CPU processes is rare, and the CUDA check needs torch

        if torch.cuda.is_available():
            out.append(
                f"trainer.devices={t.devices} under trainer=cpu trains {t.devices} CPU processes although CUDA GPUs "
                "are visible; add trainer=gpu (one GPU) or trainer=ddp (several)"
            )
    # data.name beside the demo's data.path is refused by the checks (one source); data.path replaces it silently
    given = {w.lstrip("+").partition("=")[0]: w.partition("=")[2] for w in args.overrides}
    group = given.get("data", "demo")
    if group.startswith("demo") and "data.path" in given:
        kept = ", ".join(f"data.{k}={cfg.data[k]}" for k in ("max_seq_len", "val_size", "test_size", "batch_size"))
        out.append(
            f"data.path={given['data.path']} under data={group} keeps the demo's settings ({kept}); add data=local "
            "for the settings of your own data"
        )
    return out


def prepare(argv: List[str]) -> List[str]:
    """The command line Hydra will run: shortcuts expanded, config validated, a fresh run dir claimed."""
    argv = secrets.take_from_overrides(expand_shortcuts(argv))  # before Hydra records the overrides anywhere
    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in _NO_PRECHECK):
        return argv
    if ranks.is_main():
        traps(args)
    if args.multirun:
        # optuna (and the sweeper on it) loads only for a multirun
        import hydra_plugins.ftlab_optuna_sweeper.ftlab_optuna_sweeper as plugin
        from ftlab.sweeps.precheck import check

        # Hydra scans the hydra_plugins namespace for plugins, which an editable install hides: register it
        Plugins.instance().register(plugin.FtlabOptunaSweeper)
        searched = [o for o in args.overrides if not o.lstrip("+").startswith("hydra.searchpath=")]
        check(searched + search_path(args), args.config_path, args.config_name)
        return argv
    cfg = precheck(args)
    if ranks.is_main() and args.cfg is None:
        for line in warnings_for(cfg, args):  # with the run's own lines: stderr is for what stops it
            print(f"ftlab: warning: {line}", flush=True)
    if args.cfg is None and not any(o.startswith("hydra.run.dir=") for o in args.overrides):
        # Hydra's own outputs/DATE/TIME would put two runs started in the same second into one dir
        argv.append(f"hydra.run.dir={rundir.choose(cfg.trainer.accelerator)}")
    if args.cfg is None and not ranks.is_main() and "hydra.output_subdir=null" not in argv:
        argv.append("hydra.output_subdir=null")  # .hydra/ is rank 0's to write
    return argv


def task(cfg) -> dict:
    """What Hydra runs for each job; returns the run's metrics, from which a sweeper reads its objective."""
    from ftlab.train.recipe import FineTune  # torch loads here, when a job starts, not for --help or --cfg

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = " ".join(["python -m ftlab", *hydra_cfg.overrides.task])
    several = cfg.trainer.devices * cfg.trainer.num_nodes > 1
    try:
        # the dir Hydra made is the run's: cleared if the run fails before it has results, the config's own
        # failure included (FineTune validates it: a multirun job's was not prechecked)
        with rundir.owned(run_dir, main=ranks.is_main()):
            if hydra_cfg.mode == RunMode.MULTIRUN and several and not ranks.launched_externally():
                from ftlab.sweeps.alone import run_trial_alone

                return run_trial_alone(run_dir)
            return dict(FineTune(cfg, run_dir=run_dir, command=command).run())
    except FtlabError as e:
        if not ranks.is_main():
            # Rank 0 reports. A process Lightning's launcher started must not exit non-zero after a stop
            # signal: Lightning then kills rank 0 before it has said where the checkpoint is.
            if getattr(e, "exit_code", 0) > 128:
                sys.exit(exit_code(e) if ranks.launched_externally() else 0)
            fail(e, PROG)
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
