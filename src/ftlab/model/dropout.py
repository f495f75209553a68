"""LoRA dropout that costs a fraction of PEFT's on the CPU, and can share one mask between the projections that
read the same tensor.

PEFT gives each adapted layer its own torch.nn.Dropout on the adapter's input. On a CPU that is a large share of a
step: the mask is drawn one 32-bit random number per element, for each of a decoder layer's seven projections,
though q/k/v read one tensor and gate/up another (about 20% of a SmolLM2 step; docs/contributors/cpu-performance.md).

SharedDropout keeps dropout's distribution and changes what it costs:
- On the CPU the mask comes from 16-bit slices of 64-bit draws, four elements per draw from torch's seeded
  generator, so runs stay reproducible and resumable; the rate is p rounded to a multiple of 1/65536
  (0.05 -> 0.0500031) and kept elements are scaled by 1 / (1 - that rate). Elsewhere torch's own dropout runs.
- With `shared`, a projection handed the very tensor the previous one was (q, k and v; gate and up) gets the
  previous one's dropped tensor: each projection still sees its input under dropout at rate p, and the projections
  of one input see the same mask, which PEFT does not do. Four masks per decoder layer instead of seven.
"""

import torch
from torch import nn

SCALE_BITS = 16  # resolution of the rate: p is rounded to a multiple of 1 / 2**16


class LastInput:
    """The last tensor a model's SharedDropout layers dropped, and the result, for the next layer to reuse."""

    def __init__(self):
        self.input = self.output = None

    def clear(self) -> None:
        self.input = self.output = None


class SharedDropout(nn.Module):
    def __init__(self, p: float, last: LastInput = None):
        super().__init__()
        self.p = p
        self.last = last  # None: every call draws its own mask
        levels = 2**SCALE_BITS
        dropped = round(p * levels)
        self.threshold = dropped - levels // 2  # int16 values below this are dropped
        self.scale = levels / (levels - dropped)

    def train(self, mode: bool = True):
        if self.last is not None:  # let go of the last activation, which belongs to the step that ended
            self.last.clear()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        last = self.last
        if last is not None and last.input is x:
            return last.output
        if x.device.type == "cpu":
            n = x.numel()
            # one 64-bit draw holds four 16-bit uniform integers: a quarter of the generator's work per element
            draws = torch.randint(-(2**63), 2**63 - 1, (-(-n // 4),), dtype=torch.int64, device=x.device)
            keep = draws.view(torch.int16)[:n].view(x.shape) >= self.threshold
            y = torch.where(keep, x * self.scale, 0)
        else:
            y = nn.functional.dropout(x, self.p, True)
        if last is not None:
            last.input, last.output = x, y
        return y

    def extra_repr(self) -> str:
        return f"p={self.p}, shared={self.last is not None}"


def use_shared_dropout(model, shared: bool) -> None:
    """Replace the LoRA layers' torch.nn.Dropout with SharedDropout (one LastInput for the whole model when
    `shared`). Identity dropout (p=0) is left alone."""
    last = LastInput() if shared else None
    for module in model.modules():
        layers = getattr(module, "lora_dropout", None)
        if not isinstance(layers, nn.ModuleDict):
            continue
        for name, layer in layers.items():
            if isinstance(layer, nn.Dropout):
                layers[name] = SharedDropout(layer.p, last)
