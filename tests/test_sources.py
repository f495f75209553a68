"""Every format from every kind of source, column mapping, auto-detection, splits, and bad data named in one line."""

import json

import pytest

from conftest import prepare_data, qa_rows, write_rows
from ftlab import compose
from ftlab.data.chat import IGNORE
from ftlab.utils.errors import ConfigError, FtlabError


def prepare(tmp_path, *overrides):
    """FineTune's data stages up to its data module, on the built-in byte tokenizer (no model needed)."""
    return prepare_data(f"cache_dir={tmp_path / 'cache'}", "data.val_size=2", *overrides)


def decoded(ft, example) -> tuple:
    """(whole text, supervised text) of one tokenized example."""
    supervised = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE]
    return ft.tokenizer.decode(example["input_ids"]), ft.tokenizer.decode(supervised)


def all_examples(ft) -> list:
    return [x for split in ft.prepared.splits.values() for x in split.items]


ROWS = {
    "qa": qa_rows(12),
    "instruction": [
        {"instruction": f"Double {i}.", "input": "" if i % 2 else f"({i})", "output": str(2 * i)} for i in range(12)
    ],
    "conversation": [
        {"messages": [{"role": "user", "content": f"Double {i}."}, {"role": "assistant", "content": str(2 * i)}]}
        for i in range(12)
    ],
    "sharegpt": [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": f"Double {i}."},
                {"from": "gpt", "value": str(2 * i)},
            ]
        }
        for i in range(12)
    ],
}
CASES = [
    (fmt, suffix)
    for fmt in ROWS
    for suffix in ("jsonl", "json", "csv", "parquet")
    if not (suffix == "csv" and fmt in ("conversation", "sharegpt"))
]  # CSV cells hold no lists


@pytest.mark.parametrize("fmt,suffix", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_each_format_from_each_file_type_is_detected_and_rendered(fmt, suffix, tmp_path, capsys):
    path = write_rows(tmp_path / f"data.{suffix}", ROWS[fmt])
    ft = prepare(tmp_path, f"data.path={path}")
    expected = "conversation" if fmt == "sharegpt" else fmt
    assert ft.data_format == expected
    assert f"data format: {expected} (detected from the columns" in capsys.readouterr().out
    examples = all_examples(ft)
    assert len(examples) == 12
    texts = {decoded(ft, x) for x in examples}
    answer = "<|im_start|>assistant\n10<|im_end|>"
    assert any(answer in text and supervised == "10<|im_end|>" for text, supervised in texts)
    if fmt == "sharegpt":  # ShareGPT roles map onto system/user/assistant
        assert all(text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n") for text, _ in texts)
    if fmt == "instruction":  # a non-empty input follows the instruction
        assert any("<|im_start|>user\nDouble 4.\n\n(4)<|im_end|>" in text for text, _ in texts)


def test_columns_map_onto_the_format_fields_and_system_prompts_apply(tmp_path):
    rows = qa_rows(12, question="prompt", answer="completion")
    rows[0]["sys"] = "Answer in French."
    path = write_rows(tmp_path / "pc.jsonl", rows)
    with pytest.raises(ConfigError, match=r"columns \(prompt, completion, sys\).*data.columns.question=prompt"):
        prepare(tmp_path, f"data.path={path}")
    ft = prepare(
        tmp_path,
        f"data.path={path}",
        "data.columns.question=prompt",
        "data.columns.answer=completion",
        "data.columns.system=sys",
        "data.system_prompt=Be exact.",
        "data.val_size=1",
    )
    texts = [decoded(ft, x)[0] for x in all_examples(ft)]
    assert sum("<|im_start|>system\nAnswer in French.<|im_end|>" in t for t in texts) == 1  # the row's own
    assert sum("<|im_start|>system\nBe exact.<|im_end|>" in t for t in texts) == 11  # the default elsewhere


def test_explicit_format_overrides_detection(tmp_path, capsys):
    rows = [dict(r, instruction="ignored", output="ignored") for r in qa_rows(12)]
    ft = prepare(tmp_path, f"data.path={write_rows(tmp_path / 'd.jsonl', rows)}", "data.format=instruction")
    assert ft.data_format == "instruction" and "data format: instruction (data.format)" in capsys.readouterr().out


def test_folder_files_named_by_split_become_those_splits(tmp_path):
    folder = tmp_path / "set"
    write_rows(folder / "train.jsonl", qa_rows(10))
    write_rows(folder / "validation.csv", qa_rows(3))
    write_rows(folder / "test-00000-of-00001.parquet", qa_rows(4))
    ft = prepare(tmp_path, f"data.path={folder}")
    assert {k: len(v.items) for k, v in ft.prepared.splits.items()} == {"train": 10, "validation": 3, "test": 4}


def test_without_named_splits_ratios_carve_validation_and_test_with_the_seed(tmp_path):
    folder = tmp_path / "parts"
    write_rows(folder / "a.jsonl", qa_rows(20))
    write_rows(folder / "b.csv", qa_rows(40)[20:])

    def splits(seed):
        ft = prepare(tmp_path, f"data.path={folder}", "data.val_size=0.1", "data.test_size=5", f"seed={seed}")
        return {k: sorted(map(tuple, (x["input_ids"] for x in v.items))) for k, v in ft.prepared.splits.items()}

    first = splits(1)
    assert {k: len(v) for k, v in first.items()} == {"train": 31, "validation": 4, "test": 5}
    assert splits(1) == first and splits(2)["validation"] != first["validation"]
    assert len(set(first["train"]) | set(first["validation"]) | set(first["test"])) == 40  # disjoint


def test_hub_dataset_by_name_through_the_datasets_library(tmp_path):
    folder = tmp_path / "hub-like"  # load_dataset reads a folder of data files as it reads a Hub repo
    write_rows(folder / "train.jsonl", qa_rows(10))
    write_rows(folder / "test.jsonl", qa_rows(3))
    ft = prepare(tmp_path, "data=hub", f"data.name={folder}")
    assert {k: len(v.items) for k, v in ft.prepared.splits.items()} == {"train": 8, "validation": 2, "test": 3}


def test_hub_dataset_offline_fails_in_one_line(tmp_path):
    with pytest.raises(FtlabError, match=r"data.name=nobody/no-such-set: cannot load the dataset .*data.path=") as e:
        prepare(tmp_path, "data=hub", "data.name=nobody/no-such-set")
    assert "\n" not in str(e.value)


def bad_jsonl(tmp_path, bad_line: str) -> str:
    """Ten good Q&A lines with `bad_line` as line 3."""
    lines = [json.dumps(r) for r in qa_rows(10)]
    lines.insert(2, bad_line)
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


BAD = [
    (
        '{"questoin": "1+1?", "answer": "2"}',
        [],
        r"d.jsonl:3: no column 'question' \(columns: questoin, answer\); did you mean data.columns.question=questoin\?",
    ),
    ('{"question": "1+1?", "answer": 2}', [], r"d.jsonl:3: column 'answer' must be text, got int \(2\)"),
    ('{"question": "1+1?", "answer": "  "}', [], r"d.jsonl:3: column 'answer' is an empty string"),
    ('{"question": "1+1?", "answer": null}', [], r"d.jsonl:3: column 'answer' is empty"),
    ('{"question": "1+1?", "answer": "2"', [], r"d.jsonl:3: not valid JSON"),
    ("[1, 2]", [], r"d.jsonl:3: a JSON list, not an object"),
    (
        '{"messages": [{"role": "robot", "content": "hi"}]}',
        ["data.format=conversation"],
        r"d.jsonl:3: messages\[0\]: unknown role 'robot'; use one of system, user, human, assistant, gpt",
    ),
    (
        '{"messages": [{"role": "user", "content": "hi"}]}',
        ["data.format=conversation"],
        r"d.jsonl:3: the conversation has no assistant turn",
    ),
    ('{"messages": "hi"}', ["data.format=conversation"], r"d.jsonl:3: column 'messages' must be a non-empty list"),
]


@pytest.mark.parametrize(
    "line,overrides,expected",
    BAD,
    ids=[
        "misspelled-column",
        "wrong-type",
        "empty-string",
        "null",
        "malformed-json",
        "not-an-object",
        "unknown-role",
        "no-assistant",
        "not-a-list",
    ],
)
def test_bad_rows_name_file_line_column_and_fix(line, overrides, expected, tmp_path):
    if "data.format=conversation" in overrides:  # a conversation file whose line 3 is bad
        good = json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
        path = tmp_path / "d.jsonl"
        path.write_text("\n".join([good, good, line] + [good] * 8) + "\n")
        path = str(path)
    else:
        path = bad_jsonl(tmp_path, line)
    with pytest.raises(FtlabError, match=expected) as err:
        prepare(tmp_path, f"data.path={path}", *overrides)
    assert "\n" not in str(err.value) and "data.skip_bad_rows=true" in str(err.value)


def test_undecodable_text_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in qa_rows(4)) + b'{"question": "\xff"}\n')
    with pytest.raises(FtlabError, match=r"d.jsonl:5: not UTF-8 text \(byte 0xff\); re-save the file as UTF-8"):
        prepare(tmp_path, f"data.path={path}")
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"question,answer\nok,1\nbad \xfe,2\n")
    with pytest.raises(FtlabError, match=r"d.csv:3: not UTF-8 text"):
        prepare(tmp_path, f"data.path={csv_path}")


def test_csv_row_with_the_wrong_number_of_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\n" + "".join(f"q{i},{i}\n" for i in range(5)) + "q,1,extra\n")
    with pytest.raises(FtlabError, match=r"d.csv:7: 3 fields but the header has 2"):
        prepare(tmp_path, f"data.path={path}")


def test_a_file_in_no_known_format_is_reported_before_any_split_size_problem(tmp_path):
    path = tmp_path / "few.csv"
    path.write_text("prompt,completion\nWhat is 1 plus 1?,2\n")  # one row: carving validation would leave none
    with pytest.raises(
        ConfigError,
        match=r"few.csv:2: data.format=auto found no known format in the columns "
        r"\(prompt, completion\).*data.columns.question=prompt",
    ):
        prepare(tmp_path, f"data.path={path}")


def test_skip_bad_rows_counts_them_and_prints_the_first_reasons(tmp_path, capsys):
    lines = [json.dumps(r) for r in qa_rows(20)]
    lines[4] = "{oops"
    lines[7] = json.dumps({"question": "q", "answer": ""})
    lines[9] = json.dumps({"question": "q", "answer": 5})
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ft = prepare(tmp_path, f"data.path={path}", "data.skip_bad_rows=true")
    assert ft.stats["skipped_rows"] == 3
    assert ft.stats["train_examples"] + ft.stats["val_examples"] + ft.stats["test_examples"] == 17
    out = capsys.readouterr().out
    assert "skipped 3 bad rows (data.skip_bad_rows=true); first: " in out
    assert "d.jsonl:5: not valid JSON" in out and "d.jsonl:8: column 'answer' is an empty string" in out


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["data.path=null"], "data needs exactly one source: .* \\(got neither\\)"),
        (["data.name=org/set"], "data needs exactly one source: .* \\(got both\\)"),
        (["data.subset=x"], "data.subset selects a configuration of a Hub dataset, so it needs data.name"),
        (["data.packing=true", "data.group_by_length=true"], "data.group_by_length only applies without packing"),
        (["data.test_size=1.5"], "data.test_size is a fraction below 1 or a whole row count"),
        (["data.train_on=user"], "data.train_on must be one of assistant, last_assistant, all"),
    ],
)
def test_data_options_are_validated(overrides, expected):
    from ftlab.config.checks import validate

    with pytest.raises(ConfigError, match=expected):
        validate(compose(overrides))


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(FtlabError, match=r"data.path=.*nope.jsonl: no such file"):
        prepare(tmp_path, f"data.path={tmp_path / 'nope.jsonl'}")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(FtlabError, match=r"unsupported file type '.xlsx'; use .jsonl, .ndjson, .json, .csv, .parquet"):
        prepare(tmp_path, f"data.path={tmp_path / 'd.xlsx'}")
