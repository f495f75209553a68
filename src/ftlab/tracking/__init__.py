"""Experiment trackers, one module each (tracker=NAME; tracker=all: every one whose package is installed):

  mlflow_backend.py  MLflow: a local SQLite store by default, or any tracking server; the adapter as a model
  wandb_backend.py   Weights & Biases: offline by default, online with a key

A tracker declares its name, its settings (tracker.<name>.*, a dataclass), the package it needs, and one run of
it: check (reach it before any data or model loads), start (a Lightning logger), where (what to print), finish
(final numbers and files, the status). trackers.py runs the chosen ones together for a training run; the schema's
tracker choices and sections are read from here. A tracker module imports its library inside its functions:
composing a config reads every tracker's settings, and mlflow and wandb take seconds to import.

    @TRACKERS.register
    class MyTracker(Tracker): name = "mine"; Options = MyOptions; package = "mine"; ...

A side service: the recipe (train/) opens and closes the runs and says which sweep trial a run is; the sweeper
(sweeps/) opens a sweep's parent run here. Nothing here imports either of them.
"""

import importlib.util
from pathlib import Path
from typing import List

from ftlab.utils.registry import Registry

TRACKERS = Registry("tracker", __name__)


class Tracker:
    name: str
    Options: type
    """Its settings, the tracker.<name>.* keys: a dataclass with a doc under each field."""
    package: str
    """The package it needs; tracker=all leaves it out when it is not installed."""

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def run(self, tracker_cfg, run_dir: Path, python_model=None):
        """One run of this tracker for a training run: an object with check() -> str, start(name, params, tags,
        sweep) -> a Lightning logger, where() -> str and finish(final, files, run_dir, status). `python_model`:
        builds the run as a model for trackers that keep one (MLflow's pyfunc), or None."""
        raise NotImplementedError


def chosen(tracker_cfg) -> List[str]:
    """The trackers tracker.name picks: none, one, or with `all` every registered one that is installed."""
    if tracker_cfg.name == "none":
        return []
    if tracker_cfg.name == "all":
        return [t.name for t in TRACKERS if t.installed()]
    return [tracker_cfg.name]
