"""What every source shares: the split names, the `Problems` collector for bad rows, the `Source` a data.* node
opens to, the fingerprint of its files, and the label each of several sources (data.sources) goes by. Both the
file readers and the `datasets` sources build on these; config checks read the labels (nothing here imports
torch)."""

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from ftlab.utils.errors import FtlabError

SPLITS = ("train", "validation", "test")
COMPRESSED = (".gz", ".zst", ".zstd")  # what a data file's name may end with after its own suffix
LABEL = re.compile(r"[A-Za-z0-9_.-]+")  # a label names metrics (val/loss_<label>), which trackers restrict
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


def labels(sources) -> List[str]:
    """The label of each of data.sources: its own, else its file's or folder's name less the data suffixes
    (chats.jsonl.gz: chats), else its Hub name's last part (tatsu-lab/alpaca: alpaca); other characters than
    LABEL's become _. Uniqueness is checked with the config (config/checks.py). `sources`: config nodes, their
    dataclasses, or plain dicts (a saved config read as YAML)."""
    return [
        _key(s, "label") if _key(s, "label") is not None else _derived(_key(s, "path") or _key(s, "name"))
        for s in sources
    ]


def _key(source, key: str):
    return source.get(key) if isinstance(source, dict) else getattr(source, key)


def _derived(where: str) -> str:
    name = Path(str(where).rstrip("/")).name
    if Path(name).suffix.lower() in COMPRESSED:
        name = Path(name).stem
    if Path(name).suffix[1:].isalpha():  # a data file's own suffix; a folder named v1.2 keeps its name
        name = Path(name).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "source"


def data_label(data_cfg) -> str:
    """The data a run's data.* names, in a few words for logs, tags and reports: data.path or data.name, or the
    labels of data.sources joined by +."""
    if data_cfg.sources:
        return "+".join(labels(data_cfg.sources))
    return str(data_cfg.path or data_cfg.name)
