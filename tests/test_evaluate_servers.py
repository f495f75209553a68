"""ftlab.evaluate against OpenAI-compatible servers, through ftlab.serve serving the run's merged export (a real
server, talked to by the openai client): the served answers scored beside the run's own, a judge over HTTP and a
local one, cached judgments, and one-line errors for bad endpoints and a failing judge, with nothing written."""

import json
from pathlib import Path

import pytest

from conftest import run_main, serving, train_tiny
from ftlab.config.schema import EvaluateCommand, ExportCommand
from ftlab.use import judge, runs


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained run merged into a plain model folder: what a user exports and serves."""
    from ftlab.export import export

    out = tmp_path_factory.mktemp("exported") / "merged"
    export(ExportCommand(run=str(trained), output=str(out), dtype="float32"), [])
    return out


@pytest.fixture(scope="module")
def served(exported):
    with serving(exported, "generation.max_new_tokens=6") as url:
        yield url


def evaluate(run, out, *words):
    from ftlab.config.overrides import parse
    from ftlab.evaluate import evaluate as command

    options, overrides = parse([f"run={run}", f"output={out}", "generation.max_new_tokens=6", *words], EvaluateCommand)
    return command(options, overrides)


def test_the_served_export_answers_as_the_run_does(trained, served, tmp_path):
    doc = evaluate(trained, tmp_path / "report", f"endpoint={served}")
    assert doc["endpoint"] == {"url": served, "model": "merged", "identical": 6, "compared_with": "tuned"}
    for metric in ("exact_match", "token_f1", "rouge_l"):
        assert doc["scores"]["endpoint"][metric] == doc["scores"]["tuned"][metric]
    rows = [json.loads(line) for line in (tmp_path / "report" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["endpoint"]["output"] == r["tuned"]["output"] for r in rows)
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| metric | base | tuned | change | endpoint |" in markdown
    assert "95% intervals of the change (paired bootstrap over the 6 examples): exact match " in markdown
    assert set(doc["intervals"]) == {"exact_match", "token_f1", "rouge_l"}
    assert f"endpoint: merged at {served}; 6 of 6 answers identical to the tuned model's" in markdown


def test_a_judge_over_http_judges_each_pair_in_both_orders_once(trained, served, tmp_path):
    first = evaluate(trained, tmp_path / "one", f"judge.endpoint={served}", "judge.max_tokens=8")
    section = first["judge"]
    differing = 6 - section["identical"]
    assert section["pairs"] == 6 and differing > 0 and section["asked"] == 2 * differing
    rows = [json.loads(line) for line in (tmp_path / "one" / "judgments.jsonl").read_text().splitlines()]
    cache = judge.Cache(Path(runs.locate(str(trained), []).cfg.cache_dir) / "judge")
    rubric = judge.rubric(None)
    for row in rows:
        if row["base"] == row["tuned"]:
            assert row["judgments"] == []
            continue
        assert [j["answer_a"] for j in row["judgments"]] == ["base", "tuned"]
        # what the judge read, each order: the base's answer as A, then the tuned one's, the reply cached under it
        shown = [(row["base"], row["tuned"]), (row["tuned"], row["base"])]
        for (a, b), judged in zip(shown, row["judgments"]):
            prompt = judge.render(rubric, row["messages"], row["reference"], a, b)
            assert cache.get(cache.key(section["judge"], prompt)) == judged["reply"]
    again = evaluate(trained, tmp_path / "two", f"judge.endpoint={served}", "judge.max_tokens=8")
    assert (again["judge"]["asked"], again["judge"]["cached"]) == (0, 2 * differing)
    assert {k: v for k, v in again["judge"].items() if k not in ("asked", "cached")} == {
        k: v for k, v in section.items() if k not in ("asked", "cached")
    }
    assert (tmp_path / "two" / "judgments.jsonl").read_text() == (tmp_path / "one" / "judgments.jsonl").read_text()


def test_a_local_judge_and_a_local_model_alone(exported, trained, tmp_path):
    doc = evaluate(trained, tmp_path / "judged", f"judge.model={exported}", "judge.max_tokens=4")
    assert doc["judge"]["judge"] == f"local {exported} max_tokens=4" and doc["judge"]["pairs"] == 6
    assert doc["judge"]["asked"] + doc["judge"]["cached"] == 2 * (6 - doc["judge"]["identical"])
    alone = evaluate(
        exported, tmp_path / "alone", "harness.tasks=[ftlab_facts]", "harness.limit=4", "eval.max_examples=2"
    )
    assert list(alone["scores"]) == ["model"]  # a model dir alone: no adapter, no base to compare
    assert [(r["task"], r["n"], "base" in r, 0 <= r["model"] <= 1) for r in alone["harness"]["rows"]] == [
        ("ftlab_facts", 4, False, True)
    ] * 2


def test_a_run_on_a_local_model_dir_runs_the_benchmarks(exported, tmp_path, cache_dir):
    """A run whose model is a local path (here the merged export, as make demo-rl trains GRPO on its SFT)."""
    run = train_tiny(tmp_path / "run", cache_dir, "model.random_init=null", f"model.path={exported}",
                     "trainer.max_steps=2")  # fmt: skip
    doc = evaluate(run, tmp_path / "report", "harness.tasks=[ftlab_facts]", "harness.limit=4", "eval.max_examples=2")
    assert runs.locate(str(run), []).cfg.model.path == str(exported)
    assert [(r["metric"], r["n"]) for r in doc["harness"]["rows"]] == [("acc", 4), ("acc_norm", 4)]
    assert all(r["low"] <= r["difference"] <= r["high"] for r in doc["harness"]["rows"])


def test_bad_endpoints_and_a_failing_judge_are_one_line_errors_with_nothing_written(
    trained, exported, served, tmp_path, capsys
):
    out = tmp_path / "report"
    closed = "http://127.0.0.1:9/v1"
    for words, message in (
        ([f"endpoint={closed}"], f"endpoint={closed}: cannot connect"),
        ([f"judge.endpoint={closed}"], f"judge.endpoint={closed}: cannot connect"),
        ([f"endpoint={served}", "endpoint.model=gpt-4"], f"endpoint.model=gpt-4: the server at {served} serves merged"),
        ([f"endpoint={served[: -len('/v1')]}"], "the URL should be the API's base, ending in /v1"),
        ([f"run={exported}", f"judge.endpoint={served}"], "judge.* compares the base model's answers"),
        # the server is up, and refuses every judgment: more tokens than the judge's context
        ([f"judge.endpoint={served}", "judge.max_tokens=100000"], f"judge.endpoint={served}: the server answered 400"),
    ):
        run = [] if any(w.startswith("run=") for w in words) else [f"run={trained}"]
        result = run_main(*run, f"output={out}", "generation.max_new_tokens=4", *words, module="ftlab.evaluate",
                          capsys=capsys)  # fmt: skip
        # the last line is the error, the one line ftlab prints (the refused judge's progress bar stands above it)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1 and last.startswith("ftlab.evaluate: error: ") and message in last, last
        assert result.stderr.count("error:") == 1 and not out.exists()
