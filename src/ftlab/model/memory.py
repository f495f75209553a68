"""Where a training step's memory goes: every tensor storage the step allocates, by what it holds, and the split at
the moment the live total peaks. ftlab.plan runs it over a step on fake tensors (no data, no weights); it counts
real tensors alike.

A storage is counted once however many views share it, from its allocation until it is freed, under the category
that was current when it was allocated:

  weights      the frozen base weights and buffers (4-bit packed weights and their quantization constants)
  adapter      the trainable parameters (LoRA A and B, modules_to_save)
  gradients    their gradients, relabelled as each one is accumulated
  optimizer    the optimizer's state and the temporaries of its step
  activations  what the forward pass keeps for the backward pass, and the backward pass's temporaries
  logits       from the output head's forward to its gradient: the logits, their float32 copy, the loss and its
               gradient over the vocabulary (the largest single block of a small model's step)
"""

import weakref
from typing import Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ftlab.model.fake import state_parts

CATEGORIES = ("weights", "adapter", "gradients", "optimizer", "activations", "logits")


class MemoryTracker(TorchDispatchMode):
    """`with MemoryTracker() as mem:` around a step; `mem.peak` and `mem.at_peak` ({category: bytes}) after it."""

    def __init__(self):
        super().__init__()
        self.live: Dict[int, list] = {}  # id(storage) -> [category, bytes]
        self.by_category = dict.fromkeys(CATEGORIES, 0)
        self.phase = "activations"  # the category of what is allocated now
        self.peak, self.at_peak = 0, dict(self.by_category)

    # ── what exists before the step ──
    def add_model(self, model) -> None:
        """Count the model's parameters (trainable: adapter, frozen: weights) and buffers; a trainable parameter's
        gradient is relabelled `gradients` as soon as it is accumulated."""
        for p in model.parameters():
            self._add(p, "adapter" if p.requires_grad else "weights")
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda p: self._relabel(p.grad, "gradients"))
        for b in model.buffers():
            self._add(b, "weights")
        for m in model.modules():  # a 4-bit layer's quantization constants hang off its weight, not in the state
            state = getattr(getattr(m, "weight", None), "quant_state", None)
            if state is not None:
                for part in state_parts(state):
                    for t in vars(part).values():
                        if isinstance(t, torch.Tensor):
                            self._add(t, "weights")

    def watch_head(self, head: torch.nn.Module) -> None:
        """Allocations from the head's forward until the gradient of its input exists are `logits`."""

        def started(module, args):
            self.phase = "logits"
            hidden = args[0]
            if hidden.requires_grad:  # its gradient exists once the head's backward is done

                def done(grad):
                    self.phase = "activations"

                hidden.register_hook(done)

        head.register_forward_pre_hook(started)

    def reset_peak(self) -> None:
        self.peak, self.at_peak = self.total, dict(self.by_category)

    @property
    def total(self) -> int:
        return sum(self.by_category.values())

    # ── the dispatch ──
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.nonzero.default and _is_fake(args[0]):
            # which positions are labelled: data fake tensors don't hold. ftlab.plan traces rows whose every
            # position is labelled (the most a row can cost), so every position is nonzero.
            return _all_positions(args[0])
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, self.phase)
        return out

    def _add(self, t: torch.Tensor, category: str) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self.live:
            return
        size = storage.nbytes()
        self.live[key] = [category, size]
        self.by_category[category] += size
        weakref.finalize(storage, self._free, key)
        if self.total > self.peak:
            self.peak, self.at_peak = self.total, dict(self.by_category)

    def _free(self, key: int) -> None:
        category, size = self.live.pop(key)
        self.by_category[category] -= size

    def _relabel(self, t: torch.Tensor, category: str) -> None:
        entry = self.live.get(id(t.untyped_storage()))
        if entry is None:
            self._add(t, category)
            return
        self.by_category[entry[0]] -= entry[1]
        self.by_category[category] += entry[1]
        entry[0] = category


def _is_fake(t) -> bool:
    return isinstance(t, torch.Tensor) and type(t).__name__ == "FakeTensor"


def _all_positions(t: torch.Tensor) -> torch.Tensor:
    """What nonzero returns for a tensor with no zero: the index of every element, [numel, ndim]."""
    grids = torch.meshgrid(*[torch.arange(n, device=t.device) for n in t.shape], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)
