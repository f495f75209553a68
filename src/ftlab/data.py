"""Rows on disk to batches: read JSONL, split, tokenize (chat.py), pad per batch, serve to Lightning.

rows (JSONL) ─▶ conversations ─▶ input_ids + labels (dropped if truncation left nothing to learn)
             ─▶ train/val lists ─▶ DataModule: shuffled (seeded) batches padded to their longest example
"""
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List

import lightning as L
import torch
from torch.utils.data import DataLoader

from ftlab.chat import IGNORE
from ftlab.errors import FtlabError


def read_jsonl(path: str) -> List[tuple]:
    """(where, row) pairs from a JSONL file, where = "file:line" for error messages."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FtlabError(f"data file {file} not found; set data.path=/path/to/train.jsonl")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FtlabError(f"data file {file} cannot be read as UTF-8 text ({e.__class__.__name__}: {e})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{file}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise FtlabError(f"{file}:{n}: not valid JSON ({e.msg} at column {e.colno}); each line must be "
                             "one JSON object") from None
    if not rows:
        raise FtlabError(f"data file {file} is empty; it needs one JSON conversation per line")
    return rows


def split(rows: list, val_size: float, seed: int) -> tuple:
    """Hold out `val_size` (fraction or count) of rows, chosen by a seeded shuffle."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(rows) * val_size))
    if n_val >= len(rows):
        raise FtlabError(f"data.val_size={val_size} leaves no training rows out of {len(rows)}; lower it")
    val = set(order[:n_val])
    return [r for i, r in enumerate(rows) if i not in val], [r for i, r in enumerate(rows) if i in val]


@dataclass
class Examples:
    """Tokenized examples of one split and what happened to the rows that are not among them."""

    items: List[dict] = field(default_factory=list)
    dropped_truncated: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(x["input_ids"]) for x in self.items)

    @property
    def supervised(self) -> int:
        return sum(sum(label != IGNORE for label in x["labels"]) for x in self.items)


def tokenize_rows(rows: list, to_messages: Callable, tokenize: Callable) -> Examples:
    """`to_messages(row, where)` and `tokenize(messages, where)` are FineTune's overridable stages."""
    out = Examples()
    for where, row in rows:
        example = tokenize(to_messages(row, where), where)
        if example is None:
            out.dropped_truncated += 1
        else:
            out.items.append(example)
    return out


class Collator:
    """Pads a batch to its longest example: labels with IGNORE, inputs with pad_id (masked from attention)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: List[dict]) -> dict:
        width = max(len(x["input_ids"]) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            n = len(x["input_ids"])
            ids[i, :n] = torch.tensor(x["input_ids"])
            labels[i, :n] = torch.tensor(x["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class EpochSampler(torch.utils.data.Sampler):
    """A seeded shuffle per epoch that can start part-way into one, so a resumed run sees exactly the
    batches the interrupted run had not reached, rather than replaying the epoch from its start."""

    def __init__(self, n: int, seed: int, epoch: int = 0, skip: int = 0):
        self.n, self.seed, self.epoch, self.skip = n, seed, epoch, skip

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        skip, self.skip = self.skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        # the full epoch: Lightning counts the skipped batches as done from the checkpoint it restored
        return self.n


class ChatDataModule(L.LightningDataModule):
    def __init__(self, train: List[dict], val: List[dict], batch_size: int, pad_id: int, seed: int,
                 num_workers: int = 0):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.collate = Collator(pad_id)

    def train_dataloader(self, epoch: int = 0, skip_batches: int = 0) -> DataLoader:
        """Batches in an order set by the seed alone; `epoch`/`skip_batches` start where a checkpoint left off."""
        sampler = EpochSampler(len(self.train), self.seed, epoch, skip_batches * self.batch_size)
        # its own generator: without one, every new iterator draws a seed from the global generator, which
        # dropout also draws from, so a resumed run (new iterator after the restore) would drift
        return DataLoader(self.train, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate,
                          num_workers=self.num_workers, generator=torch.Generator().manual_seed(self.seed))
