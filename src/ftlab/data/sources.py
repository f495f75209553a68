"""Rows from wherever the data lives: local files or folders (JSONL, JSON, CSV, Parquet) or a Hub dataset.

Each row travels with `where` ("train.jsonl:12", "data.csv:7", "org/name[train] row 3") so every later check
can name the place to fix. Problems met while reading (a malformed JSON line, undecodable text, a short CSV
row) go to the same `Problems` collector as rows that fail the format checks: an error by default, skipped
and counted with data.skip_bad_rows=true.

    source = open_source(cfg.data)      # cheap: finds the files (or loads the Hub dataset) and fingerprints them
    named = source.read(problems)       # {"train": rows, "validation": rows, ...}: the splits the source names
    splits = assign_splits(named, ...)  # carve the missing validation/test rows out of train, seeded
"""

import csv
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import pyarrow.parquet as pq

from ftlab.utils.errors import FtlabError, first_line

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
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


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


def open_source(data_cfg) -> Source:
    if data_cfg.name is not None:
        return _hub_source(data_cfg.name, data_cfg.subset)
    files = _local_files(data_cfg.path, data_cfg.val_path, data_cfg.test_path)
    digest = hashlib.sha256()
    for split in SPLITS:
        for path in files.get(split, []):
            digest.update(f"{split}:{path.name}:{path.stat().st_size}:".encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)

    def read(problems: Problems) -> dict:
        return {split: [row for path in paths for row in read_file(path, problems)] for split, paths in files.items()}

    return Source(str(data_cfg.path), digest.hexdigest()[:16], read)


def _local_files(path: str, val_path, test_path) -> Dict[str, List[Path]]:
    """{split: files}: a folder's files by name (train*, validation*/val*/dev*, test*), else all are train."""
    root = Path(path).expanduser()
    if root.is_dir():
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not found:
            raise FtlabError(f"data.path={root} holds no {'/'.join(SUFFIXES)} files")
        files: Dict[str, List[Path]] = {}
        for p in found:
            word = re.split(r"[-_.]", p.stem.lower())[0]
            files.setdefault(_SPLIT_WORDS.get(word, "train"), []).append(p)
        if "train" not in files:
            raise FtlabError(f"data.path={root}: no training files (found only {', '.join(sorted(files))} files)")
    else:
        files = {"train": [_existing(root, "data.path")]}
    for split, extra, key in (("validation", val_path, "data.val_path"), ("test", test_path, "data.test_path")):
        if extra is not None:
            files[split] = [_existing(Path(extra).expanduser(), key)]
    return files


def _existing(path: Path, key: str) -> Path:
    if not path.is_file():
        raise FtlabError(f"{key}={path}: no such file; point it at a {'/'.join(SUFFIXES)} file or a folder of them")
    if path.suffix.lower() not in SUFFIXES:
        raise FtlabError(f"{key}={path}: unsupported file type '{path.suffix}'; use {', '.join(SUFFIXES)}")
    return path


def read_file(path: Path, problems: Problems) -> List[tuple]:
    """(where, row) pairs of one file, by its suffix; every row a dict."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    raw = path.read_bytes()
    if suffix in (".jsonl", ".ndjson"):
        rows = _read_json_lines(path, raw, problems)
    else:
        text = _decode(path, raw)
        rows = _read_csv(path, text, problems) if suffix == ".csv" else _read_json(path, raw, text, problems)
    if not rows and not problems.reasons:
        raise FtlabError(f"{path} holds no rows")
    return rows


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FtlabError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8"
        ) from None


def _read_json_lines(path: Path, raw: bytes, problems: Problems) -> List[tuple]:
    rows = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{n}"
        try:
            text = line.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            problems.report(f"{where}: not UTF-8 text (byte 0x{line[e.start]:02x}); re-save the file as UTF-8")
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            problems.report(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object")
            continue
        if not isinstance(row, dict):
            problems.report(f"{where}: a JSON {type(row).__name__}, not an object; each line must be one JSON object")
            continue
        rows.append((where, row))
    return rows


def _read_json(path: Path, raw: bytes, text: str, problems: Problems) -> List[tuple]:
    """A JSON array of objects, an object holding one such array ({"data": [...]}), or JSON lines in a .json."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several documents: JSON lines, as datasets' to_json writes by default
            return _read_json_lines(path, raw, problems)
        raise FtlabError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        doc = lists[0] if len(lists) == 1 else [doc]
    rows = []
    for i, row in enumerate(doc, start=1):
        if isinstance(row, dict):
            rows.append((f"{path} row {i}", row))
        else:
            problems.report(
                f"{path} row {i}: a JSON {type(row).__name__}, not an object; the file must hold an array of objects"
            )
    return rows


def _read_csv(path: Path, text: str, problems: Problems) -> List[tuple]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row or None in row.values():
            width = len(row) - (None in row) + len(row.get(None) or [])
            problems.report(
                f"{where}: {width} fields but the header has {len(reader.fieldnames)}; quote fields "
                "that contain commas or newlines"
            )
            continue
        rows.append((where, row))
    return rows


def _read_parquet(path: Path) -> List[tuple]:
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise FtlabError(f"{path}: not a readable Parquet file ({first_line(e, 120)})") from None
    return [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


def _hub_source(name: str, subset) -> Source:
    """A dataset by Hub id (or a local dataset folder), through the datasets library and its cache."""
    import datasets  # here, not above: it takes a second to import, and only data.name needs it

    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset(name, subset)
    except Exception as e:  # network, auth, missing subset, offline mode: one line either way
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FtlabError(
            f"data.name={name}: cannot load the dataset ({reason}). Offline, only datasets already "
            "in the datasets cache load: connect and retry once, or download it and use "
            "data.path=/local/files"
        ) from None
    splits = {}
    for split_name in loaded:
        split = _SPLIT_WORDS.get(split_name.lower())
        if split is not None and split not in splits:
            splits[split] = (split_name, loaded[split_name])
    if "train" not in splits:
        raise FtlabError(f"data.name={name} has no train split (it has: {', '.join(loaded)})")
    fingerprint = hashlib.sha256(
        json.dumps([name, subset, [(s, n, d._fingerprint) for s, (n, d) in sorted(splits.items())]]).encode()
    ).hexdigest()[:16]

    def read(problems: Problems) -> dict:
        label = name + (f"/{subset}" if subset else "")
        return {
            split: [(f"{label}[{n}] row {i}", row) for i, row in enumerate(d, start=1)]
            for split, (n, d) in splits.items()
        }

    return Source(name, fingerprint, read)


def assign_splits(named: dict, val_size: float, test_size: float, seed: int) -> dict:
    """The source's own splits, with validation (and test, if asked) carved from train by a seeded shuffle."""
    train = named["train"]
    carve = {s: size for s, size in (("test", test_size), ("validation", val_size)) if s not in named and size}
    if not carve:
        return dict(named)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    out, taken = dict(named), 0
    for split, size in carve.items():
        n = int(size) if size >= 1 else max(1, round(len(train) * size))
        out[split] = [train[i] for i in sorted(order[taken : taken + n])]
        taken += n
    if taken >= len(train):
        sizes = ", ".join(f"data.{'val' if s == 'validation' else s}_size={v}" for s, v in carve.items())
        raise FtlabError(f"{sizes} leave no training rows out of {len(train)}; lower them")
    kept = set(order[taken:])
    out["train"] = [row for i, row in enumerate(train) if i in kept]
    return out
