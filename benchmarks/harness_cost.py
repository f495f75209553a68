"""What a benchmark costs through lm-evaluation-harness on this machine, measured on an MMLU-shaped task.

    .venv/bin/python benchmarks/harness_cost.py [--docs 200] [--prompt-tokens 100] [--batch 8] [--json FILE]

MMLU's data needs the Hub. This script writes an offline task of the same shape instead: `docs` questions of about
`prompt-tokens` tokens, ending in "Answer:", with the four single-letter choices " A" ... " D". The harness scores a
choice by its log-likelihood. For single-token choices it runs one forward pass per question, because it groups
requests that share a context. The script runs that task through the harness on SmolLM2-135M-Instruct (its base
weights, in the precision ftlab picks on this machine) and reports documents per second. From that it estimates
0-shot MMLU (14,042 questions) for one model and for ftlab.evaluate's two, base and tuned.
"""

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from ftlab import FineTune, compose

MMLU_QUESTIONS = 14_042  # the test split of cais/mmlu, all 57 subjects
HEADER = "The following are multiple choice questions (with answers).\n\n"
CHOICES = "\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"


def task_folder(root: Path, docs: int, words: int) -> Path:
    rows = []
    for i in range(docs):
        stem = " ".join(f"w{(i * 7 + k) % 97}" for k in range(words))
        rows.append({"question": f"Question {i}: {stem}?", "choices": ["one", "two", "three", "four"], "answer": i % 4})
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mmlu_shaped.yaml").write_text(
        "task: mmlu_shaped\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {root / 'rows.jsonl'}\n"
        "output_type: multiple_choice\ntest_split: test\n"
        f"doc_to_text: {json.dumps(HEADER + '{{question}}' + CHOICES)}\n"  # a JSON string is a YAML string
        "doc_to_choice: ['A', 'B', 'C', 'D']\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n"
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    recipe = FineTune(compose([]))
    source = recipe.model_source()
    tokenizer = recipe.load_tokenizer(source)
    model = recipe.load_base_model(source).eval()
    words = max(1, args.prompt_tokens // 3)  # "w12" is about three tokens; measured and printed below
    with tempfile.TemporaryDirectory() as tmp:
        folder = task_folder(Path(tmp), args.docs, words)
        first = json.loads((folder / "rows.jsonl").read_text().splitlines()[0])["question"]
        text = HEADER + first + "\nA. one\nB. two\nC. three\nD. four\nAnswer:"  # as the task renders it
        tokens = len(tokenizer(text, add_special_tokens=False).input_ids)
        manager = TaskManager(include_path=[str(folder)], include_defaults=False)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch)
        started = time.perf_counter()
        simple_evaluate(lm, tasks=["mmlu_shaped"], task_manager=manager, bootstrap_iters=0, log_samples=False)
        seconds = time.perf_counter() - started
    rate = args.docs / seconds
    result = {
        "model": recipe.cfg.model.name,
        "precision": recipe.precision,
        "docs": args.docs,
        "prompt_tokens": tokens,
        "batch": args.batch,
        "seconds": round(seconds, 2),
        "docs_per_second": round(rate, 2),
        "mmlu_0shot_minutes_one_model": round(MMLU_QUESTIONS / rate / 60, 1),
        "mmlu_0shot_minutes_base_and_tuned": round(2 * MMLU_QUESTIONS / rate / 60, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
