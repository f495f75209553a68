"""What a person reads: numbered stage lines and derived numbers, on the console and in <run dir>/train.log.

Everything printed also goes, timestamped, to train.log. Library chatter that says nothing actionable on this
path (Lightning's hardware banner, bitsandbytes' CPU kernel notices) is turned down. The progress bar is a
Lightning callback (train/callbacks.py).
"""

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from ftlab.utils.secrets import Redact

log = logging.getLogger("ftlab")


class _Stream(logging.StreamHandler):
    """Writes to whatever sys.stdout (or stderr) is at the time (pytest and notebooks swap them), not the one at
    set-up."""

    def __init__(self, name: str = "stdout"):
        self.name_of_stream = name
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(run_dir: Optional[Path] = None, stream: str = "stdout") -> None:
    """Messages to stdout (or stderr, for commands whose stdout is their answer) and, for a run, to its train.log."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = _Stream(stream)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    if run_dir is not None:
        logfile = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        logfile.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
        handlers.append(logfile)
    for handler in handlers:
        handler.addFilter(Redact())  # W&B records the console too: a secret must not reach either
        log.addHandler(handler)
    quiet_libraries()


class _LibraryErrors(_Stream):
    """The root logger's one handler in a command: what libraries log reaches stderr from ERROR up only."""


def quiet_library_warnings() -> None:
    """Libraries that log while they are imported (an optional kernel package announcing it is missing, say) would
    print their lines on stderr above a command's one-line error: with no handler of their own, Python's last-resort
    handler shows every warning. One root handler at ERROR replaces it: their errors still show, their chatter not."""
    root = logging.getLogger()
    if not any(isinstance(h, _LibraryErrors) for h in root.handlers):
        handler = _LibraryErrors("stderr")
        handler.setLevel(logging.ERROR)
        root.addHandler(handler)


def quiet_libraries() -> None:
    for name in (
        "lightning.pytorch",
        "lightning.fabric",
        "bitsandbytes",
        "kernels",
        "transformers",
        "peft",
        "huggingface_hub",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    # imported here, not above: the console serves torch-free paths (compose, --help) too
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for pattern in (
        ".*does not have many workers.*",
        ".*MatMul8bitLt.*",
        ".*gemm_4bit.*",
        ".*kernels.*",
        ".*LeafSpec.*",
        ".*Checkpoint directory.*",
        ".*gradient_checkpointing.*deprecated.*",
        ".*no `val_dataloader`.*",
        ".*in eval mode at the start of training.*",
        # resume restarts the data where the checkpoint stopped (data/steps.py), which
        # Lightning cannot see; a resumed run writes a new run dir, by design
        ".*dataloader is not resumable.*",
        ".*The dirpath has changed.*",
        # val/loss is summed over ranks by the module itself (train/module.py) before it is logged
        ".*sync_dist=True.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


class Stages:
    """Prints `[k/n] name ...` and, when the next stage starts, how long the last one took."""

    def __init__(self, names):
        self.names = tuple(names)
        self.started = None

    def start(self, name: str, detail: str = "") -> None:
        self.finish()
        k = self.names.index(name) + 1
        log.info(f"[{k}/{len(self.names)}] {name}{' ' + detail if detail else ''} ...")
        self.started = time.perf_counter()

    def finish(self) -> None:
        if self.started is not None:
            log.info(f"      done in {time.perf_counter() - self.started:.1f}s")
            self.started = None


def info(message: str) -> None:
    # used from Python without a command or a run (a stage called from a notebook): the console is stdout. Other
    # handlers on this logger (pytest attaches its own to non-propagating loggers) are no console.
    if not any(isinstance(h, _Stream) for h in log.handlers):
        setup_logging()
    log.info(f"      {message}")
