"""The LightningDataModule: training rows in a seeded order that resume can restart mid-epoch, padded per batch."""

from typing import List

import lightning as L
import torch
from torch.utils.data import DataLoader

from ftlab.data import batching


class ChatDataModule(L.LightningDataModule):
    """Training rows (examples, or packed rows of several) in a seeded order; validation examples in file order."""

    def __init__(
        self,
        train: List[dict],
        val: List[dict],
        *,
        batch_size: int,
        pad_id: int,
        seed: int,
        num_workers: int,
        group_by_length: bool,
    ):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.lengths = [len(x["input_ids"]) for x in train] if group_by_length else None
        self.collate = batching.Collator(pad_id)

    def train_dataloader(self, epoch: int = 0, skip_batches: int = 0) -> DataLoader:
        """Batches in an order set by the seed alone; `epoch`/`skip_batches` start where a checkpoint left off."""
        sampler = batching.EpochSampler(
            len(self.train), self.seed, epoch, skip_batches * self.batch_size, self.lengths, self.batch_size
        )
        # its own generator: without one, every new iterator draws a seed from the global generator, which
        # dropout also draws from, so a resumed run (new iterator after the restore) would drift
        return DataLoader(
            self.train,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )
