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
from typing import Dict, List, Optional

import torch

from ftlab.data import batching, logprobs
from ftlab.data.kinds import KINDS
from ftlab.methods import METHODS
from ftlab.use import generate, harness, metrics, report
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
    kind: str = "tokens"
    """The kind of `example` (data/kinds/), whose own scores evaluation adds (a pair's preference accuracy)."""
    example: Optional[dict] = None
    """The row as training tokenizes it, as an example of `kind`; None: nothing more than `tokens` to score."""


def split_fix(split: str) -> str:
    """What gives data the split evaluation scores."""
    return (
        "set data.test_size=0.1 or data.test_path=FILE, or eval.split=validation"
        if split == "test"
        else "set data.val_size or data.val_path"
    )


def token_loss(model, tokenized: List[dict], batch_size: int, pad_id: int) -> Optional[float]:
    """Mean cross-entropy over all supervised tokens (as val/loss in training), or None without any."""
    total, count = 0.0, 0
    device, keeps = next(model.parameters()).device, logprobs.keeps_logits(model)
    for i in range(0, len(tokenized), batch_size):
        batch = logprobs.device_batch(batching.pad(tokenized[i : i + batch_size], pad_id), device)
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
    for kind in sorted({e.kind for e in examples if e.example is not None}):
        items = [e.example for e in examples if e.kind == kind and e.example is not None]
        scores.update(KINDS.get(kind).scores(model, items, cfg.generation.batch_size, tokenizer.pad_token_id))
    method = METHODS.get(cfg.method.name)
    if method.samples:  # the answers, scored as training scored its samples (GRPO: the mean of each reward)
        pairs = [(a.output, e.example) for a, e in zip(answers, examples) if e.kind == method.kind and e.example]
        scores.update(method.scores(cfg.method, [a for a, _ in pairs], [x for _, x in pairs]))
    return {"scores": scores, "answers": answers, "per_example": per}


def answer(model, tokenizer, examples: List[Example], cfg, adapter: bool, progress: bool = True) -> Dict[str, dict]:
    """{"base": ..., "tuned": ...} (with eval.compare_base and an adapter), else {"model": ...}: each model's
    answers to the examples and their scores (`score`)."""
    results = {}
    if adapter and cfg.eval.compare_base:
        info("base model (adapter off):")
        with model.disable_adapter():  # the same weights minus the adapter: the only difference is the tuning
            results["base"] = score(model, tokenizer, examples, cfg, progress)
    if adapter:
        info("tuned model:")
    results["tuned" if adapter else "model"] = score(model, tokenizer, examples, cfg, progress)
    return results


def scored_replies(replies: List[str], examples: List[Example]) -> dict:
    """Answers that came from elsewhere (a server), scored on their text like the model's own (no loss: no logits)."""
    per = metrics.per_example(replies, [e.prompt.reference for e in examples])
    answers = [generate.Answer("", reply, None) for reply in replies]
    return {"scores": metrics.mean(per), "answers": answers, "per_example": per}


def write(out_dir: Path, doc: dict, prompts: List[Prompt], results: Dict[str, dict], judgments=None) -> None:
    """The report folder, which must be new: it appears whole or not at all."""
    with atomic(out_dir, directory=True) as tmp:
        write_jsonl(tmp / "generations.jsonl", report.generations(prompts, results))
        if judgments is not None:
            write_jsonl(tmp / "judgments.jsonl", judgments)
        write_json(tmp / "report.json", doc)
        write_text(tmp / "report.md", report.markdown(doc, prompts, results))


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
    tasks=None,
) -> dict:
    """Score the model (and, with eval.compare_base and an adapter, its base), and with `tasks` (harness.prepare's
    index of harness.tasks) run the benchmarks too; write the report into `out_dir`. Returns the report."""
    results = answer(model, tokenizer, examples, cfg, adapter, progress)
    prompts = [e.prompt for e in examples]
    doc = report.build(cfg, label, fingerprint, prompts, results)
    if tasks is not None:
        info(f"benchmarks: {', '.join(cfg.harness.tasks)}")
        doc["harness"] = harness.run(tasks, model, tokenizer, cfg, adapter)
    write(out_dir, doc, prompts, results)
    return doc
