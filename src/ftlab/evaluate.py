"""`python -m ftlab.evaluate run=RUN [eval.*=...] [generation.*=...]`: the tuned model against its base model.

Both answer the same held-out examples (eval.split of the run's data, rebuilt from the saved config: same file,
seed and split sizes): the last assistant turn of each is the reference, the turns before it the prompt. The
base model is the same loaded model with the adapter switched off, so nothing else differs. Scores: exact
match, token F1 and ROUGE-L of the answers (metrics.py), and loss and perplexity on the references' tokens
(the tokens training supervises, data.train_on). Written into the run dir:
  eval/report.json         every number, the settings and the data it was computed on
  eval/report.md           the same as a side-by-side table, with a few examples
  eval/generations.jsonl   each example's prompt, reference, answers and scores
A later evaluation of the same run writes eval-2/, eval-3/ ...; nothing is written over.
"""
import math
import shutil
from pathlib import Path
from typing import List, Optional

import torch
import torch.nn.functional as F

from ftlab import chat, commands, console, formats, generate, metrics, prompts, report, runs, sources
from ftlab.artifacts import write_json, write_jsonl
from ftlab.batching import Collator
from ftlab.chat import IGNORE
from ftlab.config import EvaluateOptions
from ftlab.console import Stages, info
from ftlab.errors import FtlabError


def split_fix(split: str) -> str:
    """What gives data the split evaluation scores."""
    return ("set data.test_size=0.1 or data.test_path=FILE, or eval.split=validation" if split == "test"
            else "set data.val_size or data.val_path")


def examples(cfg, tokenizer) -> tuple:
    """([(prompt, tokenized example)], data fingerprint) of eval.split, the first eval.max_examples of them."""
    d, split = cfg.data, cfg.eval.split
    source = sources.open_source(d)
    problems = sources.Problems(skip=d.skip_bad_rows)
    rows = sources.assign_splits(source.read(problems), d.val_size, d.test_size, cfg.seed).get(split) or []
    if not rows:
        raise FtlabError(f"eval.split={split}: the data ({source.label}) has no {split} rows; {split_fix(split)} "
                         "(a new split needs a new training run, which holds it out)")
    rows = rows[:cfg.eval.max_examples or None]
    fmt = d.format if d.format != "auto" else formats.detect(rows[0][1].keys(), d.columns, rows[0][0])
    out = []
    for where, row in rows:
        try:
            messages = formats.to_messages(row, where, fmt, d.columns, d.system_prompt)
        except FtlabError as e:
            problems.report(str(e))
            continue
        if messages[-1]["role"] != "assistant":
            problems.report(f"{where}: the conversation ends with a {messages[-1]['role']} turn, so there is no "
                            "reference answer to score against")
            continue
        tokens = chat.tokenize_conversation(tokenizer, messages, d.max_seq_len, where, d.train_on)
        out.append((prompts.split_reference(messages, where), tokens))
    return out, source.fingerprint


def token_loss(model, tokenized: List[dict], batch_size: int, pad_id: int) -> Optional[float]:
    """Mean cross-entropy over all supervised tokens (as val/loss in training), or None without any."""
    collate, total, count = Collator(pad_id), 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(tokenized), batch_size):
        batch = collate(tokenized[i:i + batch_size])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
        labels = batch["labels"][:, 1:].to(device)
        total += float(F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(),
                                       ignore_index=IGNORE, reduction="sum"))
        count += int((labels != IGNORE).sum())
    return total / count if count else None


def score(model, tokenizer, items: list, cfg, progress: bool) -> dict:
    """{"scores": averages, "answers": [...], "per_example": [...]} of one model on the examples."""
    answers = generate.answers(model, tokenizer, [p.messages for p, _ in items], cfg.generation, cfg.seed,
                               cfg.data.train_on, progress=progress)
    per = metrics.per_example([a.output for a in answers], [p.reference for p, _ in items])
    loss = token_loss(model, [t for _, t in items if t is not None], cfg.generation.batch_size,
                      tokenizer.pad_token_id)
    scores = {**metrics.mean(per), "loss": loss, "perplexity": math.exp(loss) if loss is not None else None}
    return {"scores": scores, "answers": answers, "per_example": per}


def evaluate(model, tokenizer, cfg, out_dir: Path, label: str, adapter: bool, progress: bool = True,
             trained_on: Optional[str] = None) -> dict:
    """Score the model (and, with eval.compare_base and an adapter, its base) and write the report into
    `out_dir`, which must be new; returns the report. `trained_on`: the data fingerprint training recorded."""
    items, fingerprint = examples(cfg, tokenizer)
    info(f"{len(items)} examples from the {cfg.eval.split} split")
    if trained_on and trained_on != fingerprint:
        info(f"note: the data changed since training ({cfg.data.path or cfg.data.name}); the {cfg.eval.split} "
             "split may now hold rows the model was trained on")
    results = {}
    if adapter and cfg.eval.compare_base:
        info("base model (adapter off):")
        with model.disable_adapter():  # the same weights minus the adapter: the only difference is the tuning
            results["base"] = score(model, tokenizer, items, cfg, progress)
    if adapter:
        info("tuned model:")
    results["tuned" if adapter else "model"] = score(model, tokenizer, items, cfg, progress)
    doc = report.build(cfg, label, fingerprint, items, results)
    out_dir.mkdir(parents=True)
    try:
        write_jsonl(out_dir / "generations.jsonl", report.generations(items, results))
        write_json(out_dir / "report.json", doc)
        (out_dir / "report.md").write_text(report.markdown(doc, items, results), encoding="utf-8")
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # a report is written whole or not at all
        raise
    return doc


def report_dir(run: runs.Run, output: Optional[str]) -> Path:
    """The new folder this evaluation writes: `output`, else <run dir>/eval (eval-2 ... once taken), else a new
    outputs/eval/DATE/TIME."""
    from ftlab.artifacts import new_output, new_run_dir, unused_path

    if output is not None:
        return new_output(Path(output).expanduser(), "a report")
    if run.run_dir is None:
        path = new_run_dir(Path("outputs") / "eval")
        path.rmdir()  # claimed the name; evaluate() creates it once there is a report to write
        return path
    return unused_path(run.run_dir / "eval")


def trained_fingerprint(run: runs.Run) -> Optional[str]:
    """The data fingerprint the run's training recorded in metrics.json, if there is one to compare with."""
    import json

    metrics_file = run.run_dir / "metrics.json" if run.run_dir else None
    if metrics_file is None or not metrics_file.is_file():
        return None
    return json.loads(metrics_file.read_text()).get("data_fingerprint")


def main_body(options: EvaluateOptions, overrides: List[str]) -> None:
    console.setup_logging()
    stages = Stages(("Finding the run", "Loading the model", "Evaluating"))
    stages.start("Finding the run", options.run)
    run = runs.locate(options.run, overrides)
    out_dir = report_dir(run, options.output)
    stages.start("Loading the model", run.cfg.model.name)
    model, tokenizer, precision = runs.load(run)
    info(f"precision: {precision}")
    stages.start("Evaluating", f"{run.cfg.eval.split} split, into {out_dir}")
    doc = evaluate(model, tokenizer, run.cfg, out_dir, run.label, adapter=run.adapter is not None,
                   trained_on=trained_fingerprint(run))
    stages.finish()
    console.log.info(report.table(doc))
    console.log.info(f"ftlab: report in {out_dir / 'report.md'}")


def main(argv: Optional[List[str]] = None) -> None:
    commands.main(argv, EvaluateOptions, "ftlab.evaluate", "score a tuned model against its base model", main_body)


if __name__ == "__main__":
    main()
