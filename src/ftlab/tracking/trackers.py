"""The chosen trackers (tracker.name) together: one run of each per training run, nested under the sweep when
the run is a sweep trial.

A run's life: check() before any data or model is loaded, so a wrong URI or key fails in seconds;
start() just before training, logging the flattened resolved config and tags; the Lightning loggers
stream every logged metric (loss, val loss, lr, grad norm, tokens/s, peak memory); finish() logs the
final numbers, the run dir's artifacts and the MLflow model, and closes the run with its status.
Every param and tag goes through secrets.redact_values on the way out.
"""

import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, List, Optional

from omegaconf import DictConfig, OmegaConf

from ftlab.data.rows import data_label
from ftlab.tracking import TRACKERS, chosen
from ftlab.utils import secrets
from ftlab.utils.console import info

ARTIFACTS = (
    "adapter",
    ".hydra/config.yaml",
    "metrics.json",
    "data_mix.json",
    "loss.png",
    "README.md",
    "train.log",
    "eval",
    "samples",
)


def flatten(cfg: DictConfig) -> dict:
    """The resolved config as {"lora.r": 16, ...}; lists become their text."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = (
                    value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
                )

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return secrets.redact_values(out)


def run_tags(cfg: DictConfig) -> dict:
    """What runs are filtered by: model, quantization, LoRA rank, data, and the user's own tags."""
    tags = {
        "model": cfg.model.name,
        "quant": f"{cfg.quant.bits}bit" if cfg.quant.bits else "none",
        "lora.r": str(cfg.lora.r),
        "data": Path(str(cfg.data.path)).name if cfg.data.path else data_label(cfg.data),
    }
    tags.update(dict.fromkeys(cfg.tracker.tags, ""))
    return secrets.redact_values(tags)


class Trackers:
    """The tracker runs of one training run. `trial`: the sweep trial it is (its .study, .number and
    .mlflow_parent), or None; `python_model`: builds the finished run as a model, for trackers that keep one."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        trial=None,
        python_model: Optional[Callable] = None,
        enabled: bool = True,
    ):
        """enabled=False: no tracker runs at all (the other ranks of a multi-process job: rank 0 reports)."""
        self.cfg, self.run_dir, self.sweep = cfg, run_dir, trial
        self.open = False  # between start() and finish()
        names = chosen(cfg.tracker) if enabled else []
        self.backends = [TRACKERS.get(name).run(cfg.tracker, run_dir, python_model) for name in names]

    def run_name(self) -> str:
        t = self.cfg.tracker
        if self.sweep is not None:
            return f"{t.run_name or self.sweep.study}-trial-{self.sweep.number}"
        return t.run_name or f"{t.experiment}-{datetime.now():%Y%m%d-%H%M%S}"

    def check(self) -> None:
        """Reach every tracker now; raises ConfigError with one line naming the setting to fix."""
        for backend in self.backends:
            info(backend.check())

    def start(self) -> List:
        """Open the runs; returns their Lightning loggers."""
        params, tags, name = flatten(self.cfg), run_tags(self.cfg), self.run_name()
        if self.sweep is not None:
            params.update({"sweep.study": self.sweep.study, "sweep.trial": self.sweep.number})
        loggers = []
        for backend in self.backends:
            loggers.append(backend.start(name, params, tags, self.sweep))
            self.open = True
            info(backend.where())
        return loggers

    @contextmanager
    def closing(self, stats: dict):
        """Runs closed as FAILED by an error, or KILLED by Ctrl+C (which Lightning turns into sys.exit(1) after its
        own clean shutdown), with the numbers `stats` holds by then."""
        try:
            yield self
        finally:
            if self.open:
                stopped = isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))
                self.finish(stats, "KILLED" if stopped else "FAILED")

    def finish(self, stats: dict, status: str) -> None:
        """Final numbers and artifacts, then close the runs. status: FINISHED, FAILED or KILLED."""
        if not self.open:
            return
        self.open = False
        final = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        files = [self.run_dir / a for a in ARTIFACTS if (self.run_dir / a).exists()]
        for backend in self.backends:
            backend.finish(final, files, self.run_dir, status)
