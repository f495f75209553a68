"""The preprocessing cache: tokenized splits saved under cache_dir/data/<key>.pt, so re-runs and sweep
trials skip reading and tokenizing.

The key covers everything that shapes the tokens: the data's content fingerprint, the tokenizer (vocabulary,
special tokens, chat template), every data option except those the schema marks shapes_tokens=False (batch
size, packing ...: a new option shapes the key unless declared otherwise), the seed (it picks the validation
rows), the code of every module of ftlab's data package (a module added to it is covered, with no list to keep),
the data format's own module wherever it lives, and any FineTune stage a subclass overrides. Change any of them
and the key changes; nothing is ever served stale. Entries are written whole, then renamed into
place, so a crash or a concurrent trial never leaves half an entry.
"""

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import List, Optional

import torch
from omegaconf import OmegaConf

from ftlab.data.splits import Prepared, Split
from ftlab.utils.files import atomic

DATA_PACKAGE = Path(__file__).resolve().parent  # ftlab/data: its code decides the tokens


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([tokenizer.chat_template, tokenizer.special_tokens_map], sort_keys=True, default=str)
    return hashlib.sha256(vocab.encode() + extra.encode()).hexdigest()[:16]


def shaping_options(data_cfg) -> dict:
    """The data options that shape the tokens: all of the node's keys but those the dataclass that typed it (the
    schema's data section) marks shapes_tokens=False."""
    schema = OmegaConf.get_type(data_cfg)
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    values = OmegaConf.to_container(data_cfg, resolve=True)
    return {k: v for k, v in values.items() if k not in fields or fields[k].metadata.get("shapes_tokens", True)}


def code_fingerprint(package: Path = DATA_PACKAGE) -> str:
    """A digest of every Python file under `package`, by path and content: a module added, changed or removed
    changes it."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package)}\n".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def key(data_cfg, seed: int, source_fingerprint: str, tokenizer, stages: List, kind: str = "") -> str:
    """`stages`: the FineTune methods that turn rows into tokens, and the data format, whose code is hashed too (an
    override in a subclass, a format registered from outside ftlab, changes the key); `kind`: the kind of example
    the method trains on (chat rows are prompts to an online method, labelled answers to the others)."""
    options = shaping_options(data_cfg)
    code = [code_fingerprint()] + [_source_of(f) for f in stages]
    parts = [source_fingerprint, tokenizer_fingerprint(tokenizer), options, seed, code] + ([kind] if kind else [])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_of(thing) -> str:
    """The source of a function, or of the module an object's class is defined in (a data format)."""
    target = thing if inspect.isroutine(thing) or inspect.isclass(thing) else inspect.getmodule(type(thing))
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):  # defined interactively: its name is the best we have
        return getattr(thing, "__qualname__", repr(thing))


def entry(cache_dir: str, k: str) -> Path:
    return Path(cache_dir).expanduser() / "data" / f"{k}.pt"


def load(path: Path) -> Optional[Prepared]:
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception:  # an entry from another torch version or a damaged file: rebuild it
        return None
    if "rows_read" not in stored:  # an entry from before kinds and row counts were stored
        return None
    splits = {s: _unflatten(v) for s, v in stored["splits"].items()}
    return Prepared(stored["format"], stored["kind"], splits, stored["skipped"], rows_read=stored["rows_read"])


def save(path: Path, prepared: Prepared) -> None:
    stored = {
        "format": prepared.format,
        "kind": prepared.kind,
        "skipped": prepared.skipped,
        "rows_read": prepared.rows_read,
        "splits": {s: _flatten(v) for s, v in prepared.splits.items()},
    }
    with atomic(path) as tmp:  # a crash or a concurrent sweep trial never leaves half an entry
        torch.save(stored, tmp)


def _flatten(split: Split) -> dict:
    """Flat tensors instead of lists of Python ints: compact, and fast to save and load. Each key of the examples
    (input_ids and labels; a pair's rejected_ids ...) becomes one tensor of every example's values end to end, and
    one of their lengths."""
    items = split.items
    keys = sorted(items[0]) if items else []
    fields = {}
    for k in keys:
        values = [x[k] for x in items]
        if isinstance(values[0], str):  # per-example text (a prompt row's reference and columns, as JSON)
            data = [v.encode() for v in values]
            flat = torch.tensor([b for v in data for b in v], dtype=torch.uint8)
            fields[k] = {"text": flat, "lengths": torch.tensor([len(v) for v in data], dtype=torch.int64)}
        elif isinstance(values[0], list):
            flat = torch.tensor([t for v in values for t in v], dtype=torch.int64)
            fields[k] = {"flat": flat, "lengths": torch.tensor([len(v) for v in values], dtype=torch.int64)}
        else:  # one number per example (a KTO row's desirable flag, its prompt length)
            fields[k] = {"values": torch.tensor(values, dtype=torch.int64)}
    return {"fields": fields, "count": len(items), "dropped": split.dropped}


def _unflatten(stored: dict) -> Split:
    columns = {}
    for k, f in stored["fields"].items():
        if "values" in f:
            columns[k] = f["values"].tolist()
            continue
        if "text" in f:
            data, at, column = bytes(f["text"].tolist()), 0, []
            for n in f["lengths"].tolist():
                column.append(data[at : at + n].decode())
                at += n
            columns[k] = column
            continue
        flat, at, column = f["flat"].tolist(), 0, []
        for n in f["lengths"].tolist():
            column.append(flat[at : at + n])
            at += n
        columns[k] = column
    items = [{k: columns[k][i] for k in columns} for i in range(stored["count"])]
    return Split(items, stored["dropped"])
