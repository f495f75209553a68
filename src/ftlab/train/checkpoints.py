"""Resumable checkpoints: written whole or not at all, the one before kept, and read back with a clear error when
one is damaged.

A checkpoint is written under a temporary name and renamed over checkpoints/last.ckpt; the checkpoint it replaces
stays as previous.ckpt. A kill during a write (or a network file system that lost the end of one) then leaves at
worst a damaged last.ckpt beside a good previous.ckpt, and `resume=` names the file to go back to.
"""

import os
import shutil
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ftlab.utils.errors import FtlabError, first_line

LAST, PREVIOUS = "last.ckpt", "previous.ckpt"


class KeepPrevious(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic, keeping the checkpoint it replaces as previous.ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        super().save_checkpoint(checkpoint, partial, storage_options)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        if path.exists():
            kept = path.with_name(PREVIOUS + ".partial")
            try:  # a second name for the old file: last.ckpt exists at every moment
                kept.unlink(missing_ok=True)
                os.link(path, kept)
            except OSError:  # file systems without hard links
                shutil.copyfile(path, kept)
            os.replace(kept, path.with_name(PREVIOUS))
        os.replace(partial, path)


def read(path: Path) -> dict:
    """A checkpoint's contents, or one line saying it is damaged and which checkpoint to go back to."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, unpickling error, EOF: all mean the same to the user
        previous = path.with_name(PREVIOUS)
        fix = (
            f"the checkpoint before it is kept: resume={previous}"
            if previous.is_file() and previous != path
            else "no earlier checkpoint is kept; start the run again"
        )
        reason = first_line(e, 120)
        raise FtlabError(f"{path} is damaged ({reason}), as a kill during a write can leave it; {fix}") from None


def position(path: Path) -> tuple:
    """(epoch, micro-batches done in it) where a Lightning checkpoint stopped, to restart the data there."""
    loops = read(path)["loops"]["fit_loop"]
    return (loops["epoch_progress"]["current"]["completed"], loops["epoch_loop.batch_progress"]["current"]["processed"])
