"""One rank's micro-batches of an epoch, and what each optimizer step holds across all ranks.

The global order of an epoch (batching.epoch_order: seed, epoch, optional length grouping) is cut into global
batches of batch_size x world examples; rank r takes its share of each, so every rank reads its own examples and,
per epoch, no example is read twice or skipped. A short last global batch is shared out as evenly as it goes;
a rank left with nothing gets a one-token filler row that has no label, so all ranks take the same number of
steps (DDP's collectives need that) and the filler changes nothing.

An optimizer step is `accumulate` consecutive global batches (fewer at the end of an epoch, where Lightning steps
early); a method that takes several passes over them (GRPO's mu) gets the step's micro-batches again, once per
pass. Every micro-batch carries that step's totals across micro-batches and ranks, known here from the order
alone: the model divides its summed token loss by the step's supervised-token count, so the loss of a step is the
mean over all its supervised tokens whatever the batch size, accumulation and number of ranks (module.py).
"""

from dataclasses import dataclass
from typing import List, Optional

import torch

from ftlab.data.batching import epoch_order
from ftlab.data.kinds import KINDS, Kind


def world() -> tuple:
    """(rank, world size) of this process in the running job; (0, 1) outside one. Read when data is iterated:
    Lightning starts the processes and their group inside the first fit or validate call."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class StepTotals:
    """What the optimizer step a micro-batch belongs to holds, summed over its micro-batches and all ranks."""

    supervised: int
    tokens: int  # real (non-padding) tokens
    last: bool  # this micro-batch ends the step
    units: int  # what the step's loss is the mean over: supervised tokens, or examples (the method's `unit`)
    repeat: int = 0  # which pass over the same micro-batches this step is (a method's `passes`: GRPO's mu)


def shares(batch: List[int], world_size: int) -> List[List[int]]:
    """A global batch cut into one share per rank, in order and as even as it goes (batch_size each when full)."""
    q, extra = divmod(len(batch), world_size)
    bounds = [0]
    for r in range(world_size):
        bounds.append(bounds[-1] + q + (1 if r < extra else 0))
    return [batch[bounds[r] : bounds[r + 1]] for r in range(world_size)]


class StepBatches(torch.utils.data.Sampler):
    """This rank's micro-batches of an epoch, as lists of (row index or None for a filler, StepTotals) keys for
    StepRows; able to start part-way into an epoch, so a resumed run reads exactly the batches the interrupted
    one had not reached."""

    def __init__(
        self,
        rows: List[dict],
        *,
        batch_size: int,
        accumulate: int,
        seed: int,
        epoch: int = 0,
        skip: int = 0,
        group_by_length: bool = False,
        place: Optional[tuple] = None,
        kind: Kind = None,
        per_example: bool = False,
        passes: int = 1,
    ):
        """`kind`: the rows' kind (tokens unless said); `per_example`: a step's loss is the mean over its examples
        (the preference methods), not over its supervised tokens; `passes`: optimizer steps on each step's
        micro-batches, one after the other (an online method's passes over the completions it sampled)."""
        self.passes = passes
        self.place = place  # (rank, world size); None: this process's place in the running job
        self.batch_size, self.accumulate, self.seed, self.epoch, self.skip = batch_size, accumulate, seed, epoch, skip
        kind = kind or KINDS.get("tokens")
        self.lengths = [kind.length(x) for x in rows]
        self.supervised = [kind.supervised(x) for x in rows]
        self.units = [1] * len(rows) if per_example else self.supervised
        self.group_by_length = group_by_length

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def global_batches(self, world_size: int) -> List[List[int]]:
        n, size = len(self.lengths), self.batch_size * world_size
        lengths = self.lengths if self.group_by_length else None
        order = epoch_order(n, self.seed, self.epoch, lengths, size)
        return [order[s : s + size] for s in range(0, n, size)]

    def __iter__(self):
        rank, world_size = self.place or world()
        batches = self.global_batches(world_size)
        out = []
        for start in range(0, len(batches), self.accumulate):
            window = batches[start : start + self.accumulate]
            labelled = sum(self.supervised[i] for b in window for i in b)
            tokens = sum(self.lengths[i] for b in window for i in b)
            count = sum(self.units[i] for b in window for i in b)
            for repeat in range(self.passes):
                for k, batch in enumerate(window):
                    mine = shares(batch, world_size)[rank]
                    step = StepTotals(labelled, tokens, k == len(window) - 1, count, repeat)
                    out.append([(i, step) for i in mine] or [(None, step)])
        skip, self.skip = self.skip, 0
        return iter(out[skip:])

    def __len__(self) -> int:
        # the full epoch: Lightning counts the skipped batches as done from the checkpoint it restored
        n, size = len(self.lengths), self.batch_size * (self.place or world())[1]
        return -(-n // size) * self.passes


class StepRows(torch.utils.data.Dataset):
    """Rows looked up by StepBatches' keys: (row, StepTotals), or (None, StepTotals) for a filler."""

    def __init__(self, rows: List[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        index, step = key
        return (None if index is None else self.rows[index]), step


class StepCollator:
    """Batches a micro-batch as its kind does and adds its step's totals: step_supervised, step_tokens, step_end."""

    def __init__(self, kind: Kind, pad_id: int, like: dict):
        """`like`: a training row, the shape of the filler."""
        self.kind, self.pad_id, self.filler = kind, pad_id, kind.filler(like, pad_id)

    def __call__(self, batch: list) -> dict:
        rows = [row for row, _ in batch if row is not None]
        step: StepTotals = batch[0][1]
        if not rows:  # this rank's share of a short last batch is empty: one token, no label
            rows = [self.filler]
        out = self.kind.collate(rows, self.pad_id)
        out.update(step_supervised=step.supervised, step_tokens=step.tokens, step_end=step.last, step_units=step.units)
        out["step_repeat"] = step.repeat
        return out


class RankShare(torch.utils.data.Sampler):
    """Validation rows of this rank: every world-th of `n`, none twice (the loss is summed over ranks, module.py).
    A rank left with none (fewer rows than ranks: a small source of a mix) reads index n instead, a filler row the
    dataset ends with: Lightning stops a job where one rank's dataloader is empty, and the filler scores nothing."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        rank, world_size = world()
        return iter(range(rank, self.n, world_size) or [self.n])

    def __len__(self) -> int:
        rank, world_size = world()
        return len(range(rank, self.n, world_size)) or 1
