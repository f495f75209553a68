"""One data path: a FineTune subclass with a row format of its own trains, evaluates after training, previews,
evaluates and answers through the commands, because every command goes through the recipe's stages."""

import json

import pytest

from conftest import qa_rows, write_rows
from ftlab import FineTune, compose
from ftlab.config.schema import EvaluateCommand, InferCommand
from ftlab.utils.errors import ConfigError, FtlabError


class QA(FineTune):
    """Rows {"q": ..., "a": ...}, a format ftlab does not know."""

    def to_conversation(self, row, where, fmt):
        if not isinstance(row.get("q"), str):
            raise FtlabError(f"{where}: no q")
        return [{"role": "user", "content": row["q"]}, {"role": "assistant", "content": row["a"]}]


def overrides(data, cache_dir, *extra):
    return [
        "model=tiny",
        "data=local",
        f"data.path={data}",
        "data.val_size=4",
        "data.test_size=0.1",
        "data.batch_size=4",
        "trainer.max_steps=2",
        "trainer.precision=32-true",
        f"cache_dir={cache_dir}",
        "generation.max_new_tokens=3",
        *extra,
    ]


@pytest.fixture
def mine(tmp_path):
    return write_rows(tmp_path / "mine.jsonl", qa_rows(40, question="q", answer="a"))


def test_the_plain_recipe_names_the_columns_it_cannot_read(mine, cache_dir, workdir):
    with pytest.raises(ConfigError, match=r"data.format=auto found no known format in the columns \(q, a\)"):
        FineTune(compose(overrides(mine, cache_dir))).run()


@pytest.fixture
def trained_qa(mine, cache_dir, workdir):
    recipe = QA(compose(overrides(mine, cache_dir, "eval.after_train=true")), run_dir=workdir / "run")
    return recipe, recipe.run()  # the recipe knows its run dir: it was given


def test_a_subclass_trains_and_evaluates_after_training_on_its_own_rows(trained_qa, mine):
    recipe, stats = trained_qa
    rows = [json.loads(line) for line in mine.read_text().splitlines()]
    held_out = json.loads((recipe.run_dir / "eval" / "report.json").read_text())
    assert held_out["examples"] == stats["test_examples"] == 4 and stats["eval_examples"] == 4
    generations = [
        json.loads(line) for line in (recipe.run_dir / "eval" / "generations.jsonl").read_text().splitlines()
    ]
    answers = {r["q"]: r["a"] for r in rows}
    for g in generations:  # each reference is the held-out row's own answer, mapped by the subclass
        assert g["reference"] == answers[g["messages"][-1]["content"]]


def test_the_evaluate_command_uses_the_subclass_stages(trained_qa, workdir):
    from ftlab.evaluate import evaluate

    recipe, stats = trained_qa
    doc = evaluate(
        EvaluateCommand(run=str(recipe.run_dir), output=str(workdir / "again")),
        ["generation.max_new_tokens=3"],
        recipe_cls=QA,
    )
    assert doc["examples"] == 4
    assert doc["scores"]["tuned"]["loss"] == pytest.approx(stats["eval_loss"], rel=1e-5)


def test_the_infer_command_reads_prompts_in_the_subclass_format(trained_qa, workdir):
    from ftlab.infer import infer

    recipe, _ = trained_qa
    prompts = workdir / "prompts.jsonl"
    prompts.write_text('{"q": "What is 2 plus 2?", "a": "4"}\n')
    infer(InferCommand(run=str(recipe.run_dir), input=str(prompts)), ["generation.max_new_tokens=3"], recipe_cls=QA)
    (line,) = [json.loads(x) for x in (workdir / "prompts-outputs.jsonl").read_text().splitlines()]
    assert line["messages"] == [{"role": "user", "content": "What is 2 plus 2?"}] and line["reference"] == "4"


def test_preview_shows_the_subclass_rows(mine, cache_dir, capsys):
    from ftlab.preview import preview

    preview(overrides(mine, cache_dir), n=1, recipe_cls=QA)
    shown = capsys.readouterr().out
    assert "first 1 training examples" in shown and "[[" in shown and "What is" in shown
