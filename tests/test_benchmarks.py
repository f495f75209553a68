"""harness.tasks: standard benchmarks through lm-evaluation-harness, base vs tuned. The shipped offline task scores
what a hand count of the model's log-likelihoods gives; a user's own task folder runs; a 4-bit run runs; unknown
tasks and folders are one-line errors with nothing written."""

import json

import pytest
import torch

from conftest import run_main
from ftlab.config.schema import EvaluateCommand
from ftlab.use.harness import SHIPPED


def evaluate(run, out, *overrides):
    from ftlab.evaluate import evaluate as command

    return command(EvaluateCommand(run=str(run), output=str(out)), ["eval.max_examples=2", *overrides])


def loglik(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized as the harness does: the whole text, split where the context ends."""
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    start = len(tokenizer(context, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logps = model(torch.tensor([whole])).logits[0, :-1].float().log_softmax(-1)
    return sum(float(logps[i - 1, whole[i]]) for i in range(start, len(whole)))


def hand_scores(model, tokenizer, docs) -> dict:
    """acc and acc_norm of the shipped multiple-choice task: the likeliest choice, raw and per character."""
    acc = norm = 0
    for doc in docs:
        lls = [loglik(model, tokenizer, f"Question: {doc['question']}\nAnswer:", f" {c}") for c in doc["choices"]]
        acc += max(range(4), key=lambda i: (lls[i], -i)) == doc["answer"]
        norm += max(range(4), key=lambda i: (lls[i] / len(doc["choices"][i]), -i)) == doc["answer"]
    return {"acc": acc / len(docs), "acc_norm": norm / len(docs)}


def test_the_shipped_task_scores_base_and_tuned_as_a_hand_count(trained, tmp_path):
    from ftlab.train.recipe import FineTune
    from ftlab.train.trained import Trained
    from ftlab.use import runs

    doc = evaluate(trained, tmp_path / "report", "harness.tasks=[ftlab_facts]", "harness.limit=12")
    rows = {r["metric"]: r for r in doc["harness"]["rows"]}
    assert set(rows) == {"acc", "acc_norm"} and doc["harness"]["num_fewshot"] == {"ftlab_facts": 0}
    docs = [json.loads(line) for line in (SHIPPED / "facts.jsonl").read_text().splitlines()[:12]]
    loaded = Trained(runs.locate(str(trained), []), FineTune)
    model = loaded.model()
    tuned = hand_scores(model, loaded.tokenizer, docs)
    with model.disable_adapter():
        base = hand_scores(model, loaded.tokenizer, docs)
    for metric, row in rows.items():
        assert (row["base"], row["tuned"], row["n"]) == (pytest.approx(base[metric]), pytest.approx(tuned[metric]), 12)
        assert row["difference"] == pytest.approx(tuned[metric] - base[metric])
        assert row["low"] <= row["difference"] <= row["high"]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["harness"]["rows"] == doc["harness"]["rows"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| task | metric | base | tuned | change | 95% interval |" in markdown
    assert f"| ftlab_facts | acc | {rows['acc']['base']:.4f} | {rows['acc']['tuned']:.4f} |" in markdown


def test_a_task_folder_of_your_own_runs_on_a_4bit_run(trained_4bit, tmp_path):
    own = tmp_path / "tasks"
    own.mkdir()
    rows = [{"q": f"What is {a} plus {b}?", "a": str(a + b)} for a, b in ((2, 3), (7, 8), (10, 4), (1, 1))]
    (own / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (own / "sums.yaml").write_text(  # the harness's own way to a local file: dataset_path json, data_files
        "task: my_sums\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {own / 'sums.jsonl'}\n"
        "output_type: generate_until\n"
        "test_split: test\n"
        "doc_to_text: 'Q: {{q}}\\nA:'\n"
        "doc_to_target: ' {{a}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    doc = evaluate(trained_4bit, tmp_path / "report", "harness.tasks=[my_sums]", f"harness.include_path={own}",
                   "harness.limit=3")  # fmt: skip
    (row,) = doc["harness"]["rows"]
    assert (row["task"], row["metric"], row["n"]) == ("my_sums", "exact_match", 3)
    assert 0 <= row["base"] <= 1 and 0 <= row["tuned"] <= 1 and row["low"] <= row["difference"] <= row["high"]


def test_unknown_tasks_and_folders_are_one_line_errors_with_nothing_written(trained, tmp_path, capsys):
    out = tmp_path / "report"
    for args, message in (
        (["harness.tasks=[no_such_task]"], "harness.tasks: no task named 'no_such_task' in lm-eval 0.4"),
        (["harness.tasks=[ftlab_facts]", f"harness.include_path={tmp_path / 'nope'}"], "no such folder"),
    ):
        result = run_main(f"run={trained}", f"output={out}", *args, module="ftlab.evaluate", capsys=capsys)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0 and not out.exists()
