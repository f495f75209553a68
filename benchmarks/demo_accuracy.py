"""Exact-match accuracy on the demo task, base model vs. a run's adapter, on that run's validation rows.

    .venv/bin/python -m ftlab                                  # the default demo run
    .venv/bin/python benchmarks/demo_accuracy.py outputs/DATE/TIME

Rebuilds the run's split from its saved config (same data, seed and val_size), answers every validation
prompt greedily with the base model and with the adapter, and scores answers with ftlab.demo.is_correct.
"""
import argparse
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from peft import PeftModel
from transformers import AutoTokenizer

from ftlab.checks import validate
from ftlab.configure import setup
from ftlab.demo import is_correct
from ftlab.generate import answers
from ftlab.model import load_base_model, resolve_source
from ftlab.sources import Problems, assign_splits, open_source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--show", type=int, default=3, help="print this many example answers")
    args = parser.parse_args()
    setup()
    cfg = validate(OmegaConf.load(args.run_dir / ".hydra" / "config.yaml"))
    d = cfg.data
    splits = assign_splits(open_source(d).read(Problems()), d.val_size, d.test_size, cfg.seed)
    val = [row for _, row in splits["validation"]]
    source = resolve_source(cfg.model, cfg.cache_dir, cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.run_dir / "adapter")  # with the chat template training used
    model = load_base_model(source, cfg.model, cfg.quant, "cpu").eval()
    started = time.perf_counter()
    prompts = [r["conversations"][:-1] for r in val]
    base = answers(model, tokenizer, prompts, max_new_tokens=16)
    tuned_model = PeftModel.from_pretrained(model, args.run_dir / "adapter").eval()
    tuned = answers(tuned_model, tokenizer, prompts, max_new_tokens=16)
    for name, outs in (("base model", base), ("fine-tuned", tuned)):
        correct = sum(is_correct(r, o) for r, o in zip(val, outs))
        print(f"{name:<11} exact match {correct}/{len(val)} ({100 * correct / len(val):.0f}%)")
    for r, b, t in list(zip(val, base, tuned))[:args.show]:
        print(f"  {r['conversations'][-2]['content']!r}: base {b.strip()!r}, tuned {t.strip()!r}, "
              f"expected {r['conversations'][-1]['content']!r}")
    print(f"({time.perf_counter() - started:.0f}s for {2 * len(val)} generations)", file=sys.stderr)


if __name__ == "__main__":
    main()
