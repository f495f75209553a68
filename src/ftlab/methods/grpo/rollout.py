"""Sampling a group of completions per prompt inside training: batched `generate` with the KV cache and the
adapter on, every completion drawn from its own random stream.

A completion's stream is seeded by (seed, its prompt's row: its content, row_identity; the optimizer step, its index
in the group), never by the batch it is in: the same prompt at the same step gets the same completions in one
process or on any rank of several, and a resumed run draws what the interrupted one would have drawn, with no
generator state to keep. The draw is inverse-CDF sampling from the tempered, top-k/top-p filtered distribution
with one uniform number per position, taken from the stream; transformers' greedy search then keeps that token
(SeededSampling turns the scores into a one-hot), so the KV cache, padding and stopping are transformers' own.
"""

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ftlab.data.chat import IGNORE


def row_identity(row: dict) -> str:
    """What a prompt row is, for its streams: its prompt, reference and columns, not where its file lies (the same
    data samples alike from any checkout or copy)."""
    return json.dumps([row["prompt"], row["reference"], row["columns"]], sort_keys=True, default=str)


def stream_seed(seed: int, row: str, step: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}|{row}|{step}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def uniforms(seeds: List[int], length: int) -> torch.Tensor:
    """[completions, length] uniform numbers, row i from its own generator seeded seeds[i]."""
    out = torch.empty(len(seeds), length, dtype=torch.float64)
    for i, s in enumerate(seeds):
        out[i] = torch.rand(length, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
    return out


def filtered_probs(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The sampling distribution: softmax(scores / temperature), cut to the top_k tokens (0: all) and the smallest
    set whose mass reaches top_p (1: all), renormalised. float64, so the draw is stable across batch shapes."""
    logits = scores.double() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # the mass of the tokens ranked above each
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before >= top_p)
        probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token whose cumulative probability first exceeds u, per row."""
    cdf = probs.cumsum(-1)
    return (
        torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1).to(cdf.dtype)).squeeze(1).clamp(max=probs.shape[-1] - 1)
    )


class SeededSampling(LogitsProcessor):
    """Scores to a one-hot of the token each row's stream draws, so greedy search keeps it."""

    def __init__(self, u: torch.Tensor, prompt_width: int, temperature: float, top_k: int, top_p: float):
        self.u, self.width = u, prompt_width
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t = input_ids.shape[1] - self.width
        probs = filtered_probs(scores, self.temperature, self.top_k, self.top_p)
        tokens = draw(probs, self.u[:, t].to(scores.device))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tokens.unsqueeze(1), 0.0)


def shared_prefix_cache(model, ids, mask, group: int):
    """The KV cache of each prompt's tokens (left-padded `ids`, `mask`), computed once and repeated `group` times,
    row i's copies next to each other, as generate expects them."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers a left-padded prompt
    cache = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
    cache.batch_repeat_interleave(group)
    return cache


@contextmanager
def merged(model):
    """The adapter folded into the weights for sampling, and the adapter layers switched off: one matrix product
    per layer instead of three. The merged weights are new tensors swapped in for the frozen ones, which are put
    back untouched (W + BA - BA would not give W back exactly, and a resumed run must see the same weights).
    Where the adapter cannot be folded (DoRA, a quantized base) the model samples with it unmerged."""
    layers = [m for m in model.modules() if hasattr(m, "get_delta_weight") and hasattr(m, "base_layer")]
    foldable = [m for m in layers if not _unfoldable(m)]
    if not layers or len(foldable) < len(layers):
        yield model
        return
    originals = []
    try:
        for layer in foldable:
            weight = layer.base_layer.weight
            delta = sum(layer.get_delta_weight(name) for name in layer.active_adapters if name in layer.lora_A)
            originals.append((layer.base_layer, weight))
            layer.base_layer.weight = torch.nn.Parameter(weight.detach() + delta.to(weight.dtype), requires_grad=False)
        with model.disable_adapter():
            yield model
    finally:
        for base_layer, weight in originals:
            base_layer.weight = weight


def _unfoldable(layer) -> bool:
    weight = getattr(layer.base_layer, "weight", None)
    dora = any(getattr(layer, "use_dora", {}).get(n, False) for n in layer.active_adapters)
    plain = weight is not None and type(weight.data) is torch.Tensor  # not sharded (FSDP) or quantized
    return not plain or dora or weight.dtype not in (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class Rollout:
    """A group of completions per prompt, every tensor [prompts x group, ...] in group order."""

    input_ids: torch.Tensor
    """Prompt (left-padded) and completion (right-padded), as the policy scores them."""
    attention_mask: torch.Tensor
    labels: torch.Tensor
    """The completion tokens, stop token included; IGNORE elsewhere."""
    completion_ids: List[List[int]]
    """Each completion's tokens, without the stop token."""
    truncated: torch.Tensor
    """[completions] bool: no stop token within the length limit."""
    seconds: float
    """Wall time of the generation."""


def generate(
    model, batch: dict, *, group: int, seeds: List[int], options, stop_ids: List[int], pad_id: int, share_prompts=True
) -> Rollout:
    """`group` completions of each prompt of `batch` (left-padded input_ids + attention_mask) by `model` as it samples
    (train/module.py: Forward.generating); `seeds`: one per completion (stream_seed).

    Each prompt is read once, not once per completion: its KV cache (all but its last token) is computed for the
    prompts alone and repeated for the group, and generation goes on from there (share_prompts=False: every
    completion reads its prompt in full, as plain `generate` does; benchmarks/grpo_step.py compares the two)."""
    started = time.perf_counter()
    width, length = batch["input_ids"].shape[1], options.max_completion_length
    prompts = batch["input_ids"].repeat_interleave(group, 0)
    mask = batch["attention_mask"].repeat_interleave(group, 0)
    sampler = SeededSampling(uniforms(seeds, length), width, options.temperature, options.top_k, options.top_p)
    config = GenerationConfig(
        max_new_tokens=length, do_sample=False, eos_token_id=stop_ids, pad_token_id=pad_id, use_cache=True
    )
    extra = {}
    if share_prompts and width > 1:
        extra["cache"] = shared_prefix_cache(model, batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1], group)
    processors = LogitsProcessorList([sampler])
    out = model.generate(
        input_ids=prompts, attention_mask=mask, generation_config=config, logits_processor=processors, **extra
    )
    new = out[:, width:]
    stops = torch.isin(new, torch.tensor(stop_ids, device=new.device))
    has_stop = stops.any(1)
    first = torch.where(has_stop, stops.int().argmax(1), torch.full_like(has_stop, new.shape[1], dtype=torch.long))
    keep = torch.arange(new.shape[1], device=new.device).unsqueeze(0) <= first.unsqueeze(1)  # stop token included
    labels = torch.full_like(out, IGNORE)
    labels[:, width:] = torch.where(keep, new, torch.full_like(new, IGNORE))
    full_mask = torch.cat([mask, keep.long()], 1)
    completion_ids = [row[: int(n)].tolist() for row, n in zip(new, first)]
    return Rollout(
        torch.where(full_mask.bool(), out, torch.full_like(out, pad_id)),
        full_mask,
        labels,
        completion_ids,
        ~has_stop,
        time.perf_counter() - started,
    )
