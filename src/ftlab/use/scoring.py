"""A model (and, with an adapter, its base) scored on held-out examples, written as a report.

Each example is a conversation whose last assistant turn is the reference and the turns before it the prompt,
prepared by the recipe's own stages (FineTune.evaluation_examples). Scores: exact match, token F1 and ROUGE-L
of the answers (metrics.py), and loss and perplexity on the references' tokens (the tokens training supervises,
data.train_on). The base model is the same loaded model with the adapter switched off, so nothing else differs.
The report folder holds:
  report.json         every number, the settings and the data it was computed on
  report.md           the same as a side-by-side table, with a few examples
  generations.jsonl   each example's prompt, reference, answers and scores
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

from ftlab.data.batching import Collator
from ftlab.use import generate, logprobs, metrics, report
from ftlab.use.prompts import Prompt
from ftlab.utils.console import info
from ftlab.utils.files import atomic, write_json, write_jsonl, write_text


@dataclass
class Example:
    prompt: Prompt
    """The conversation up to the answer, and the reference answer."""
    text: str
    """The prompt as the chat template renders it, generation prompt added."""
    ids: List[int]
    """Its tokens, as training tokenizes the same text."""
    tokens: Optional[dict]
    """input_ids + labels of the whole conversation (None when truncation left no supervised token)."""
    pair: Optional[dict] = None
    """A preference row's chosen and rejected answers, tokenized as training scores them (data/preference.py)."""


def split_fix(split: str) -> str:
    """What gives data the split evaluation scores."""
    return (
        "set data.test_size=0.1 or data.test_path=FILE, or eval.split=validation"
        if split == "test"
        else "set data.val_size or data.val_path"
    )


def token_loss(model, tokenized: List[dict], batch_size: int, pad_id: int) -> Optional[float]:
    """Mean cross-entropy over all supervised tokens (as val/loss in training), or None without any."""
    collate, total, count = Collator(pad_id), 0.0, 0
    device, keeps = next(model.parameters()).device, logprobs.keeps_logits(model)
    for i in range(0, len(tokenized), batch_size):
        batch = logprobs.device_batch(collate(tokenized[i : i + batch_size]), device)
        with torch.no_grad():
            logps, n = logprobs.answer_logps(model, batch, keeps)
        total -= float(logps.sum())
        count += int(n.sum())
    return total / count if count else None


def score(model, tokenizer, examples: List[Example], cfg, progress: bool) -> dict:
    """{"scores": averages, "answers": [...], "per_example": [...]} of one model on the examples."""
    answers = generate.answers(
        model, tokenizer, [(e.text, e.ids) for e in examples], cfg.generation, cfg.seed, progress=progress
    )
    per = metrics.per_example([a.output for a in answers], [e.prompt.reference for e in examples])
    loss = token_loss(
        model, [e.tokens for e in examples if e.tokens is not None], cfg.generation.batch_size, tokenizer.pad_token_id
    )
    scores = {**metrics.mean(per), "loss": loss, "perplexity": math.exp(loss) if loss is not None else None}
    pairs = [e.pair for e in examples if e.pair is not None]
    if pairs:
        scores.update(preference(model, pairs, cfg.generation.batch_size, tokenizer.pad_token_id))
    return {"scores": scores, "answers": answers, "per_example": per}


def preference(model, pairs: List[dict], batch_size: int, pad_id: int) -> dict:
    """preference_accuracy: the share of pairs whose chosen answer the model finds likelier than the rejected one,
    by mean token log-probability (summed, a short answer would win for being short); preference_margin: the mean
    of that difference. Unlike training's rewards these need no reference, so base and tuned are scored alike."""
    collate, margins = Collator(pad_id), []
    device = next(model.parameters()).device
    for i in range(0, len(pairs), batch_size):
        batch = logprobs.device_batch(collate(pairs[i : i + batch_size]), device)
        with torch.no_grad():
            logps, count = logprobs.answer_logps(model, batch, logprobs.keeps_logits(model))
        mean, half = logps / count.clamp(min=1), logps.shape[0] // 2
        margins += (mean[:half] - mean[half:]).tolist()
    return {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "preference_margin": sum(margins) / len(margins),
    }


def evaluate(
    model,
    tokenizer,
    examples: List[Example],
    cfg,
    out_dir: Path,
    label: str,
    fingerprint: str,
    adapter: bool,
    progress: bool = True,
) -> dict:
    """Score the model (and, with eval.compare_base and an adapter, its base) and write the report into
    `out_dir`, which must be new: it appears whole or not at all. Returns the report."""
    results = {}
    if adapter and cfg.eval.compare_base:
        info("base model (adapter off):")
        with model.disable_adapter():  # the same weights minus the adapter: the only difference is the tuning
            results["base"] = score(model, tokenizer, examples, cfg, progress)
    if adapter:
        info("tuned model:")
    results["tuned" if adapter else "model"] = score(model, tokenizer, examples, cfg, progress)
    prompts = [e.prompt for e in examples]
    doc = report.build(cfg, label, fingerprint, prompts, results)
    with atomic(out_dir, directory=True) as tmp:
        write_jsonl(tmp / "generations.jsonl", report.generations(prompts, results))
        write_json(tmp / "report.json", doc)
        write_text(tmp / "report.md", report.markdown(doc, prompts, results))
    return doc
