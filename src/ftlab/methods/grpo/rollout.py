"""Sampling a group of completions per prompt inside training: batched `generate` with the KV cache and the
adapter on, every completion drawn from its own random stream.

A completion's stream is seeded by (seed, its prompt's row, the optimizer step, its index in the group), never by
the batch it is in: the same prompt at the same step gets the same completions in one process or on any rank of
several, and a resumed run draws what the interrupted one would have drawn, with no generator state to keep.
The draw is inverse-CDF sampling from the tempered, top-k/top-p filtered distribution with one uniform number per
position, taken from the stream; transformers' greedy search then keeps that token (SeededSampling turns the
scores into a one-hot), so the KV cache, padding and stopping are transformers' own.
"""

import hashlib
import time
from dataclasses import dataclass
from typing import List

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from ftlab.data.chat import IGNORE


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


def generate(model, batch: dict, *, group: int, seeds: List[int], options, stop_ids: List[int], pad_id: int) -> Rollout:
    """`group` completions of each prompt of `batch` (left-padded input_ids + attention_mask) by `model` as it samples
    (train/module.py: Forward.generating); `seeds`: one per completion (stream_seed)."""
    started = time.perf_counter()
    prompts = batch["input_ids"].repeat_interleave(group, 0)
    mask = batch["attention_mask"].repeat_interleave(group, 0)
    width, length = prompts.shape[1], options.max_completion_length
    sampler = SeededSampling(uniforms(seeds, length), width, options.temperature, options.top_k, options.top_p)
    config = GenerationConfig(
        max_new_tokens=length, do_sample=False, eos_token_id=stop_ids, pad_token_id=pad_id, use_cache=True
    )
    processors = LogitsProcessorList([sampler])
    out = model.generate(input_ids=prompts, attention_mask=mask, generation_config=config, logits_processor=processors)
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
