"""Answers to prompts already rendered and tokenized as in training (FineTune.prompt_ids), generated in
left-padded batches with the run's `generation` settings and stopped at the template's end-of-turn marker.
"""

import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from ftlab.data.chat import end_of_turn, stop_ids


@dataclass
class Answer:
    prompt: str
    """The exact text the model continued: the conversation through the chat template, generation prompt added
    ("" for a server's answer: the server rendered it)."""
    output: str
    """The reply, end-of-turn marker and surrounding whitespace removed."""
    new_tokens: Optional[int]
    """None for a server's answer."""


def settings(gen_cfg) -> dict:
    """The generation settings that shaped an answer, as recorded beside it (sampling knobs only when sampling)."""
    out = {
        "max_new_tokens": gen_cfg.max_new_tokens,
        "do_sample": gen_cfg.do_sample,
        "repetition_penalty": gen_cfg.repetition_penalty,
    }
    if gen_cfg.do_sample:
        out.update(temperature=gen_cfg.temperature, top_p=gen_cfg.top_p, top_k=gen_cfg.top_k)
    return out


def _generation_config(model, tokenizer, gen_cfg, marker: str) -> GenerationConfig:
    # a fresh GenerationConfig, not the model's: its file may switch sampling on or set a temperature of its own
    stop = {*stop_ids(tokenizer), *_as_list(getattr(model.generation_config, "eos_token_id", None))}
    marker_id = tokenizer.convert_tokens_to_ids(marker) if marker else None
    kwargs = dict(settings(gen_cfg), pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stop - {None}))
    if marker and marker_id in (None, tokenizer.unk_token_id):  # a marker this vocabulary spells as text
        kwargs["stop_strings"] = [marker]
    return GenerationConfig(**kwargs)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def answers(
    model, tokenizer, prompts: List[Tuple[str, List[int]]], gen_cfg, seed: int, progress: bool = False, streamer=None
) -> List[Answer]:
    """The model's reply to each prompt, in order. `prompts`: (text, token ids) of each conversation so far,
    rendered with the generation prompt (FineTune.prompt_ids)."""
    marker = end_of_turn(tokenizer)
    config = _generation_config(model, tokenizer, gen_cfg, marker)
    extra = {"tokenizer": tokenizer} if config.stop_strings else {}
    device = next(model.parameters()).device
    torch.manual_seed(seed)  # sampling draws from the global generator
    bar = _progress(len(prompts)) if progress and len(prompts) > gen_cfg.batch_size else None
    out, started, generated = [], time.perf_counter(), 0
    for i in range(0, len(prompts), gen_cfg.batch_size):
        batch = prompts[i : i + gen_cfg.batch_size]
        width = max(len(ids) for _, ids in batch)
        # left padding: every prompt ends at the right edge, where generation continues
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for _, ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in batch])
        with torch.no_grad():
            result = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                generation_config=config,
                streamer=streamer,
                use_cache=True,
                **extra,
            )
        for (text, _), row in zip(batch, result[:, width:].tolist()):
            new = _until_stop(row, config.eos_token_id, tokenizer.pad_token_id)
            generated += len(new)
            reply = tokenizer.decode(new, skip_special_tokens=True)
            if marker and marker in reply:
                reply = reply[: reply.index(marker)]
            out.append(Answer(text, reply.strip(), len(new)))
        if bar is not None:
            bar.update(len(batch))
            bar.set_postfix_str(f"{generated / (time.perf_counter() - started):.0f} tok/s")
    if bar is not None:
        bar.close()
    return out


def _until_stop(row: List[int], stop: List[int], pad: Optional[int]) -> List[int]:
    """New tokens up to (not including) the first stop token; the rest of a finished row is padding."""
    for j, token in enumerate(row):
        if token in stop or token == pad:
            return row[:j]
    return row


def _progress(total: int):
    return tqdm(total=total, desc="generating", unit="prompt", file=sys.stderr, dynamic_ncols=True)
