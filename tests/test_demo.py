"""The bundled demo data is what its generator makes, valid, and split without overlap."""

import json
from pathlib import Path

from ftlab.config.checks import validate
from ftlab.config.compose import compose
from ftlab.data import demo
from ftlab.data.formats import FORMATS

SHIPPED = Path(demo.__file__).parent.parent / "assets" / "demo.jsonl"


def test_shipped_file_is_regenerated_exactly():
    rows = [json.loads(line) for line in SHIPPED.read_text().splitlines()]
    assert rows == demo.make_rows(500, seed=0)
    data = compose([]).data
    for i, row in enumerate(rows):
        FORMATS.get("conversation").parse(row, f"demo.jsonl:{i + 1}", data)  # every row is valid


def test_default_data_config_points_at_the_shipped_file():
    assert Path(validate(compose([])).data.path) == SHIPPED


def test_answers_are_unique_dates_and_scored_exactly():
    rows = demo.make_rows(500, seed=0)
    answers = [r["conversations"][-1]["content"] for r in rows]
    assert len(set(answers)) == len(answers)  # no validation date is ever seen in training
    assert demo.is_correct(rows[0], f"  {answers[0]}\n")
    assert not demo.is_correct(rows[0], f"The date is {answers[0]}.")


def test_shipped_pairs_are_the_preference_variant_of_the_same_prompts():
    pairs_file = SHIPPED.with_name("demo_pairs.jsonl")
    rows, pairs = demo.make_rows(500, seed=0), [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert pairs == demo.make_pairs(rows)
    for row, pair in zip(rows, pairs):
        system, user, answer = row["conversations"]
        assert pair["prompt"] == [system, user] and pair["chosen"] == [answer]
        assert pair["rejected"] == [{"role": "assistant", "content": user["content"]}]


def test_the_pairs_split_holds_out_the_same_prompts_as_the_sft_demo():
    from ftlab.data import sources

    def held_out(cfg):
        named = sources.open_source(cfg.data).read(sources.Problems())
        carved = sources.assign_splits(named, cfg.data.val_size, cfg.data.test_size, cfg.seed)
        return [
            [json.dumps(r.get("conversations", r.get("prompt"))[:2]) for _, r in carved[s]]
            for s in ("validation", "test")
        ]

    assert held_out(validate(compose([]))) == held_out(validate(compose(["data=demo_pairs", "method=dpo"])))
