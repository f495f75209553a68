"""What fits a device, from traced steps (plan.py): the peak per device under a strategy, and the largest
micro-batch and longest sequence whose traced peak stays within the memory a device leaves usable."""

import math
from typing import Callable, Dict, List, Optional

from ftlab.train.plan import Model, Setup, Traced
from ftlab.utils.errors import ConfigError


def per_device(traced: Traced, cfg, setup: Setup, strategy: Optional[str] = None, devices: int = 0) -> Dict[str, int]:
    """The traced split as each device holds it under the strategy: DDP adds its all-reduce buckets, one more copy
    of the gradients; FSDP shards weights, adapter, gradients and optimizer state over the devices, and gathers one
    decoder layer's weights whole while it runs (figured from the traced step, not traced itself)."""
    strategy = strategy or cfg.trainer.strategy
    n = devices or cfg.trainer.devices * cfg.trainer.num_nodes
    split = dict(traced.split)
    if strategy == "ddp" and n > 1:
        split["gradients"] += traced.split["adapter"]  # the buckets hold a gradient of every trainable parameter
    elif strategy == "fsdp":
        for key in ("weights", "adapter", "gradients", "optimizer"):
            split[key] = math.ceil(split[key] / n)
        split["weights"] += setup.layer_bytes
    return split


def device_peak(cfg, setup: Setup) -> Callable[[Traced], int]:
    """The peak per device of a traced step of `cfg`'s model, as the limits below count it."""
    return lambda traced: sum(per_device(traced, cfg, setup).values())


def parse_size(text: str) -> int:
    """Bytes of '80GB' (10^9), '24GiB' (2^30), '512MB', '512MiB', or a bare number of GB."""
    units = {"gib": 2**30, "gb": 10**9, "mib": 2**20, "mb": 10**6, "tib": 2**40, "tb": 10**12}
    s = str(text).strip().lower().replace(" ", "")
    for unit, size in units.items():
        if s.endswith(unit):
            s, scale = s[: -len(unit)], size
            break
    else:
        scale = 10**9
    try:
        value = float(s)
    except ValueError:
        raise ConfigError(f"plan.device_memory={text} is not a size; e.g. plan.device_memory=80GB") from None
    if value <= 0:
        raise ConfigError(f"plan.device_memory={text} must be > 0; e.g. plan.device_memory=24GB")
    return int(value * scale)


def largest_batch(model: Model, seq: int, usable: int, total: Callable) -> int:
    """The largest micro-batch whose traced peak (as `total` counts it per device) fits `usable` bytes; 0: none.
    The peak grows linearly with the micro-batch, so two steps give the line and a third checks its answer."""
    one = total(model.trace(1, seq))
    if one > usable:
        return 0
    other = max(2, max((t.batch for t in model.traces if t.seq == seq), default=2))  # a step traced already
    slope = max((total(model.trace(other, seq)) - one) // (other - 1), 1)
    guess = max(1, min(4096, 1 + (usable - one) // slope))
    while guess > 1 and total(model.trace(guess, seq)) > usable:
        guess -= max(1, guess // 20)
    return guess


def longest_sequence(model: Model, batch: int, start: int, usable: int, total: Callable, step: int = 64) -> int:
    """The longest sequence (a multiple of `step`, at most the model's positions) whose traced peak fits; 0: none.
    The peak grows with the length at most quadratically (attention scores), so three steps give the curve; the
    answer is traced, and lowered until it fits."""
    limit = model.setup.max_positions or 1 << 20
    lengths = sorted({max(step, start // 2), start, min(limit, start * 2)})
    if total(model.trace(batch, lengths[0])) > usable:
        return 0
    peaks = [total(model.trace(batch, n)) for n in lengths]
    guess = _solve(lengths, peaks, usable, limit)
    guess = max(step, min(limit, guess // step * step))
    while guess > step and total(model.trace(batch, guess)) > usable:
        guess = max(step, int(guess * 0.9) // step * step)
    return guess


def _solve(xs: List[int], ys: List[int], target: int, limit: int) -> int:
    """The largest x at most `limit` where the parabola (or line) through the points stays at most `target`."""
    if len(xs) < 3:
        slope = (ys[-1] - ys[0]) / max(xs[-1] - xs[0], 1) or 1
        return int(xs[0] + (target - ys[0]) / slope)
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    d = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / d
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / d
    c = y0 - a * x0 * x0 - b * x0
    if abs(a) < 1e-9:
        return int((target - c) / b) if b > 0 else limit
    disc = b * b - 4 * a * (c - target)
    if disc < 0:
        return limit
    return int(min(limit, (-b + math.sqrt(disc)) / (2 * a) if a > 0 else limit))
