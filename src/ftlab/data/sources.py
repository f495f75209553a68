"""Rows from wherever the data lives: local files or folders, a folder saved by `datasets`, or a Hub dataset.

Local files are JSONL (.jsonl, .ndjson), JSON, CSV, Parquet, or plain text (.txt) for continued pretraining; all
but Parquet (compressed inside already) may also come compressed as .gz or .zst/.zstd and read exactly as their
plain forms (`train.jsonl.gz` is a training file whose errors name `train.jsonl.gz:12`). A .txt file is one row
{data.columns.text: the whole file}, or with data.text_per_line=true one row per non-empty line. A folder written
by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` loads through `datasets.load_from_disk`, its splits named
as a Hub dataset's are.

Each row travels with `where` ("train.jsonl:12", "data.csv:7", "notes.txt", "org/name[train] row 3") so every
later check can name the place to fix. Problems met while reading (a malformed JSON line, undecodable text, a
short CSV row) go to the same `Problems` collector as rows that fail the format checks: an error by default,
skipped and counted with data.skip_bad_rows=true.

    source = open_source(cfg.data)      # cheap: finds the files (or loads the Hub dataset) and fingerprints them
    named = source.read(problems)       # {"train": rows, "validation": rows, ...}: the splits the source names
    splits = assign_splits(named, ...)  # carve the missing validation/test rows out of train, seeded
"""

import random
import re
from pathlib import Path
from typing import Dict, List

# what callers import from here: the shared types, read_file, and the sources themselves
from ftlab.data.datasets_source import _SAVED_DATASET, _SAVED_DICT, _hub_source, _is_saved, _saved_source
from ftlab.data.readers import _KINDS, _shown_suffix, file_kind, read_file
from ftlab.data.rows import _SPLIT_WORDS, SPLITS, Problems, Source, _fingerprint
from ftlab.utils.errors import FtlabError


def open_source(data_cfg) -> Source:
    """The source data.* names, found and fingerprinted; its rows are read only when `read` is called."""
    if data_cfg.name is not None:
        return _hub_source(data_cfg.name, data_cfg.subset)
    root = Path(data_cfg.path).expanduser()
    extra = _extra_files(data_cfg.val_path, data_cfg.test_path)
    text_column, per_line = data_cfg.columns.text, data_cfg.text_per_line

    def read_files(files: Dict[str, List[Path]], problems: Problems) -> dict:
        return {
            split: [row for path in paths for row in read_file(path, problems, text_column, per_line)]
            for split, paths in files.items()
        }

    if _is_saved(root):
        return _saved_source(root, extra, read_files)
    files = {**_local_files(root), **extra}  # data.val_path/test_path replace the folder's own split files
    hashed = [(f"{split}:{path.name}", path) for split in SPLITS for path in files.get(split, [])]
    return Source(str(data_cfg.path), _fingerprint(hashed), lambda problems: read_files(files, problems))


# ── local files ──────────────────────────────────────────────────────────────────────────────────────────


def _local_files(root: Path) -> Dict[str, List[Path]]:
    """{split: files}: a folder's files by name (train*, validation*/val*/dev*, test*), else all are train."""
    if not root.is_dir():
        return {"train": [_existing(root, "data.path")]}
    found = sorted(p for p in root.rglob("*") if p.is_file() and file_kind(p))
    _refuse_saved_inside(root, found)
    row_files = [p for p in found if file_kind(p)[0] != ".txt"]
    if row_files:  # .txt beside row files is a README or a licence, not data: a text corpus is .txt files alone
        found = row_files
    if not found:
        raise FtlabError(f"data.path={root} holds no {_KINDS} files; point data.path at a folder or file of them")
    files: Dict[str, List[Path]] = {}
    for p in found:
        word = re.split(r"[-_.]", p.name.lower())[0]
        files.setdefault(_SPLIT_WORDS.get(word, "train"), []).append(p)
    if "train" not in files:
        raise FtlabError(
            f"data.path={root}: no training files (found only {', '.join(sorted(files))} files); add a train* file"
        )
    return files


def _refuse_saved_inside(root: Path, found: List[Path]) -> None:
    """A save_to_disk folder inside the scanned one would be read as its JSON metadata: point at it instead."""
    saved = [p.parent for p in found if p.name in (_SAVED_DICT, _SAVED_DATASET[1]) and _is_saved(p.parent)]
    if saved:
        inner = min(saved, key=lambda p: len(p.parts))  # the DatasetDict, not one of its split folders
        raise FtlabError(
            f"data.path={root}: {inner} is a folder written by datasets' save_to_disk, not data files; "
            f"set data.path={inner}"
        )


def _extra_files(val_path, test_path) -> Dict[str, List[Path]]:
    """{split: [file]} of data.val_path and data.test_path, where set."""
    extra = {}
    for split, path, key in (("validation", val_path, "data.val_path"), ("test", test_path, "data.test_path")):
        if path is not None:
            extra[split] = [_existing(Path(path).expanduser(), key)]
    return extra


def _existing(path: Path, key: str) -> Path:
    """The data file `key` names, checked to exist and to be of a kind ftlab reads."""
    if not path.is_file():
        folders = " or a folder of them (or one written by save_to_disk)" if key == "data.path" else ""
        raise FtlabError(f"{key}={path}: no such file; point it at a {_KINDS} file{folders}")
    if file_kind(path) is None:
        raise FtlabError(f"{key}={path}: unsupported file type '{_shown_suffix(path)}'; use {_KINDS}")
    return path


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
