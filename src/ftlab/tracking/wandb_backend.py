"""Weights & Biases (tracker=wandb): offline by default, into <run dir>/wandb, for a later `wandb sync`; online
with a key. wandb and Lightning's logger are imported inside the functions that use them (composing a config reads
the settings below, and wandb takes seconds to import)."""

import netrc
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ftlab.tracking import TRACKERS, Tracker
from ftlab.utils.console import log
from ftlab.utils.errors import ConfigError, first_line
from ftlab.utils.options import opt


@dataclass
class WandbOptions:
    project: str = "ftlab"
    """W&B project."""
    entity: Optional[str] = None
    """W&B team or user; null: your default entity."""
    mode: str = opt("offline", choices=["online", "offline", "disabled"], example="tracker.wandb.mode=online")
    """offline writes the run into <run dir>/wandb for a later `wandb sync`; online needs an API key."""
    api_key: Optional[str] = None
    """Secret. Prefer the WANDB_API_KEY environment variable; either way it is never written to any file."""


@TRACKERS.register
class Wandb(Tracker):
    name = "wandb"
    Options = WandbOptions
    package = "wandb"

    def run(self, tracker_cfg, run_dir: Path, python_model=None):
        return WandbBackend(tracker_cfg, run_dir)


_BAD_NAME = re.compile(r"[/\\#?%:]")  # characters W&B refuses in project and entity names


def has_api_key() -> bool:
    """WANDB_API_KEY (where secrets.py also puts tracker.wandb.api_key), or a `wandb login` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbBackend:
    def __init__(self, tracker, run_dir: Path):
        self.tracker, self.c, self.run_dir = tracker, tracker.wandb, run_dir
        self.run = None

    def check(self) -> str:
        for key in ("project", "entity"):
            value = getattr(self.c, key)
            if value is not None and (not value or _BAD_NAME.search(value)):
                raise ConfigError(
                    f"tracker.wandb.{key}={value!r} is not a valid W&B name; use letters, digits, - _ and . only"
                )
        if self.c.mode == "online" and not has_api_key():
            raise ConfigError(
                "tracker.wandb.mode=online needs an API key: set WANDB_API_KEY (or run `wandb "
                "login`), or use tracker.wandb.mode=offline and `wandb sync` later"
            )
        return f"W&B: project '{self.c.project}', {self.c.mode}"

    def start(self, name: str, params: dict, tags: dict, sweep):
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        labels = [(f"{k}:{v}" if v else k)[:64] for k, v in tags.items()]  # 64: W&B's longest tag
        self.run = wandb.init(
            project=self.c.project,
            entity=self.c.entity,
            name=name,
            mode=self.c.mode,
            dir=str(self.run_dir),
            tags=labels,
            config=dict(params),
            group=sweep.study if sweep else None,
            job_type="trial" if sweep else "train",
            settings=wandb.Settings(silent=True),
        )
        # Lightning's axis, as its WandbLogger sets when it starts the run itself
        self.run.define_metric("trainer/global_step")
        self.run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        return WandbLogger(experiment=self.run)

    def where(self) -> str:
        if self.c.mode == "offline":
            return (
                f"W&B: offline run in {self.run.dir.rsplit('/files', 1)[0]}; upload it later with `wandb sync "
                f"{self.run.dir.rsplit('/files', 1)[0]}`"
            )
        return f"W&B: {self.c.mode} run {self.run.name}" + (f" at {self.run.url}" if self.run.url else "")

    def finish(self, final: dict, files: list, run_dir: Path, status: str) -> None:
        if self.run is None:  # never started
            return
        import wandb

        try:
            self.run.summary.update(final)
            adapter = run_dir / "adapter"
            if adapter.is_dir() and status == "FINISHED":
                artifact = wandb.Artifact(f"adapter-{self.run.id}", type="model")
                artifact.add_dir(str(adapter))
                self.run.log_artifact(artifact)
            for f in files:  # the run's files dir is uploaded with the run (wandb.save would only link them)
                if f.is_file():  # W&B's own config.yaml is taken: ours goes in as ftlab-config.yaml
                    shutil.copy2(f, Path(self.run.dir) / ("ftlab-config.yaml" if f.name == "config.yaml" else f.name))
                elif f.name != "adapter":  # the evaluation report (the adapter went in as an artifact)
                    shutil.copytree(f, Path(self.run.dir) / f.name, dirs_exist_ok=True)
        except Exception as e:
            log.info(
                f"W&B: could not log the final results ({type(e).__name__}: {first_line(e)}); they are all in {run_dir}"
            )
        finally:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
