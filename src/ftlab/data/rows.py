"""What every source shares: the split names, the `Problems` collector for bad rows, the `Source` a data.* node
opens to, and the fingerprint of its files. Both the file readers and the `datasets` sources build on these."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from ftlab.utils.errors import FtlabError

SPLITS = ("train", "validation", "test")
# file stems and Hub split names that mean a split; anything else in a folder is training data
_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "eval": "validation",
    "test": "test",
}


@dataclass
class Problems:
    """Where bad rows go: raised at once, or (skip=True) counted with their reasons."""

    skip: bool = False
    reasons: List[str] = field(default_factory=list)

    def report(self, message: str) -> None:
        if not self.skip:
            raise FtlabError(message + "; or set data.skip_bad_rows=true to skip such rows")
        self.reasons.append(message)


@dataclass
class Source:
    label: str
    """How messages name the source: the path or the dataset name."""
    fingerprint: str
    """Changes whenever the content does: the preprocessing cache is keyed by it."""
    read: Callable[[Problems], Dict[str, list]]


def _fingerprint(files: List[Tuple[str, Path]]) -> str:
    """A digest of the files' names (as labelled) and bytes: it changes whenever their content does."""
    digest = hashlib.sha256()
    for label, path in files:
        digest.update(f"{label}:{path.stat().st_size}:".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
