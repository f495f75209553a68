"""The preprocessing cache: tokenized splits saved under cache_dir/data/<key>.pt, so re-runs and sweep
trials skip reading and tokenizing.

The key covers everything that shapes the tokens: the data's content fingerprint, the tokenizer (vocabulary,
special tokens, chat template), every data option except those the schema marks shapes_tokens=False (batch
size, packing ...: a new option shapes the key unless declared otherwise), the seed (it picks the validation
rows), the code that renders and masks, and any FineTune stage a subclass overrides. Change any of them and
the key changes; nothing is ever served stale. Entries are written whole, then renamed into
place, so a crash or a concurrent trial never leaves half an entry.
"""

import dataclasses
import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import Optional

import torch
from omegaconf import OmegaConf

from ftlab.config.schema import DataOptions
from ftlab.data.splits import Prepared, Split
from ftlab.utils.files import atomic

# modules whose code decides the tokens: a change in ftlab itself invalidates old entries too
_CODE = (
    "ftlab.data.sources",
    "ftlab.data.rows",
    "ftlab.data.readers",
    "ftlab.data.datasets_source",
    "ftlab.data.formats",
    "ftlab.data.tool_calls",
    "ftlab.data.chat",
    "ftlab.data.preference",
    "ftlab.data.text",
    "ftlab.data.splits",
    "ftlab.data.cache",
)


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([tokenizer.chat_template, tokenizer.special_tokens_map], sort_keys=True, default=str)
    return hashlib.sha256(vocab.encode() + extra.encode()).hexdigest()[:16]


def shaping_options(data_cfg) -> dict:
    """The data options that shape the tokens: all of the node's keys but those its schema (DataOptions, or
    whatever dataclass typed the node) marks shapes_tokens=False."""
    schema = OmegaConf.get_type(data_cfg)
    fields = {f.name: f for f in dataclasses.fields(schema if dataclasses.is_dataclass(schema) else DataOptions)}
    values = OmegaConf.to_container(data_cfg, resolve=True)
    return {k: v for k, v in values.items() if k not in fields or fields[k].metadata.get("shapes_tokens", True)}


def key(data_cfg, seed: int, source_fingerprint: str, tokenizer, stages: list) -> str:
    """`stages`: the FineTune methods that turn rows into tokens; an override in a subclass changes the key."""
    options = shaping_options(data_cfg)
    code = [inspect.getsource(importlib.import_module(m)) for m in _CODE]
    parts = [source_fingerprint, tokenizer_fingerprint(tokenizer), options, seed, code, [_source_of(f) for f in stages]]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_of(method) -> str:
    try:
        return inspect.getsource(method)
    except (OSError, TypeError):  # defined interactively: its name is the best we have
        return getattr(method, "__qualname__", repr(method))


def entry(cache_dir: str, k: str) -> Path:
    return Path(cache_dir).expanduser() / "data" / f"{k}.pt"


def load(path: Path) -> Optional[Prepared]:
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception:  # an entry from another torch version or a damaged file: rebuild it
        return None
    return Prepared(stored["format"], {s: _unflatten(v) for s, v in stored["splits"].items()}, stored["skipped"])


def save(path: Path, prepared: Prepared) -> None:
    stored = {
        "format": prepared.format,
        "skipped": prepared.skipped,
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
        if isinstance(values[0], list):
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
        flat, at, column = f["flat"].tolist(), 0, []
        for n in f["lengths"].tolist():
            column.append(flat[at : at + n])
            at += n
        columns[k] = column
    items = [{k: columns[k][i] for k in columns} for i in range(stored["count"])]
    return Split(items, stored["dropped"])
