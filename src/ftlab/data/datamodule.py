"""The LightningDataModule: this rank's training micro-batches in a seeded order that resume can restart
mid-epoch, each with its optimizer step's token totals (steps.py); this rank's share of the validation rows, in one
dataloader per source of a mix (data.sources)."""

import functools
from typing import List, Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from ftlab.data import steps
from ftlab.data.kinds import Kind


class ChatDataModule(L.LightningDataModule):
    """Training rows (examples, or packed rows of several) in a seeded order; validation examples in file order."""

    def __init__(
        self,
        train: List[dict],
        val: List[dict],
        *,
        kind: Kind,
        per_example: bool,
        batch_size: int,
        accumulate: int,
        pad_id: int,
        seed: int,
        num_workers: int,
        group_by_length: bool,
        passes: int = 1,
        val_sizes: Optional[Sequence[int]] = None,
    ):
        """`kind`: the examples' kind; `per_example`: a step's loss is the mean over its examples, not its tokens;
        `passes`: optimizer steps on each step's micro-batches (steps.StepBatches); `val_sizes`: how many of the
        validation examples, in order, each source of a mix has (None: one source)."""
        self.passes = passes
        super().__init__()
        self.train, self.val, self.kind, self.per_example = train, val, kind, per_example
        self.batch_size, self.accumulate, self.seed, self.num_workers = batch_size, accumulate, seed, num_workers
        self.group_by_length = group_by_length
        self.pad_id = pad_id
        self.val_sizes = list(val_sizes) if val_sizes is not None else [len(val)]
        self.collate = functools.partial(kind.collate, pad_id=pad_id)  # a list of examples into a batch

    def train_dataloader(self, epoch: int = 0, skip_batches: int = 0) -> DataLoader:
        """Batches in an order set by the seed alone; `epoch`/`skip_batches` start where a checkpoint left off
        (skip_batches counts this rank's micro-batches, which is every rank's count)."""
        sampler = steps.StepBatches(
            self.train,
            batch_size=self.batch_size,
            accumulate=self.accumulate,
            seed=self.seed,
            epoch=epoch,
            skip=skip_batches,
            group_by_length=self.group_by_length,
            kind=self.kind,
            per_example=self.per_example,
            passes=self.passes,
        )
        # its own generator: without one, every new iterator draws a seed from the global generator, which
        # dropout also draws from, so a resumed run (new iterator after the restore) would drift
        return DataLoader(
            steps.StepRows(self.train),
            batch_sampler=sampler,
            collate_fn=steps.StepCollator(self.kind, self.pad_id, self.train[0]),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self):
        """One DataLoader of the validation examples; with several sources, a list of one per source (Lightning
        passes its index to validation_step), so each source's loss is measured apart."""
        loaders, start = [], 0
        for size in self.val_sizes:
            part = self.val[start : start + size]
            start += size
            loaders.append(
                DataLoader(
                    part + [self.kind.filler(part[0], self.pad_id)],  # read only by a rank with no row (RankShare)
                    batch_size=self.batch_size,
                    sampler=steps.RankShare(len(part)),
                    collate_fn=self.collate,
                    num_workers=self.num_workers,
                    generator=torch.Generator().manual_seed(self.seed),
                )
            )
        return loaders if len(loaders) > 1 else loaders[0]
