"""Labels cover exactly the assistant turns and their end-of-turn tokens; bad data fails in one line."""
import json

import pytest

from conftest import CHAT
from ftlab import FineTune, compose
from ftlab.chat import IGNORE, to_conversation, tokenize_conversation
from ftlab.data import read_jsonl, split
from ftlab.errors import FtlabError
from ftlab.model import byte_tokenizer

MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? Answer with a full sentence."},
    {"role": "assistant", "content": "The capital of Italy is Rome."},
]


def supervised_runs(tokenizer, example):
    """Decode each maximal run of supervised tokens."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE:
            assert label == token  # labels are the tokens themselves; the model shifts them
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.fixture(scope="session")
def smollm2_tokenizer(cache_dir):
    from ftlab.model import load_tokenizer, resolve_source

    cfg = compose(["model=smollm2", f"cache_dir={cache_dir}"])
    return load_tokenizer(resolve_source(cfg.model, str(cache_dir), cfg.seed), cfg.model)


@pytest.mark.parametrize("messages", [MULTI_TURN, MULTI_TURN[1:]], ids=["with-system", "without-system"])
def test_labels_are_exactly_assistant_contents_and_end_of_turn_byte_tokenizer(messages):
    tok = byte_tokenizer()
    example = tokenize_conversation(tok, messages, 1024, "test")
    assert supervised_runs(tok, example) == ["Paris.<|im_end|>", "The capital of Italy is Rome.<|im_end|>"]


@pytest.mark.slow
@pytest.mark.parametrize("messages", [MULTI_TURN, MULTI_TURN[1:]], ids=["with-system", "without-system"])
def test_labels_are_exactly_assistant_contents_and_end_of_turn_smollm2(messages, smollm2_tokenizer):
    example = tokenize_conversation(smollm2_tokenizer, messages, 1024, "test")
    assert supervised_runs(smollm2_tokenizer, example) == [
        "Paris.<|im_end|>", "The capital of Italy is Rome.<|im_end|>"]
    # without a system turn SmolLM2's template adds its own; it is context, never a label
    assert "You are a helpful AI assistant" in smollm2_tokenizer.decode(example["input_ids"]) or messages[0][
        "role"] == "system"


def test_truncation_keeps_partial_answers_and_drops_fully_cut_ones():
    tok = byte_tokenizer()
    full = tokenize_conversation(tok, MULTI_TURN, 1024, "test")
    first_answer_end = max(i for i, label in enumerate(full["labels"][:120]) if label != IGNORE) + 1
    cut = tokenize_conversation(tok, MULTI_TURN, first_answer_end, "test")
    assert supervised_runs(tok, cut) == ["Paris.<|im_end|>"]
    assert tokenize_conversation(tok, MULTI_TURN, 20, "test") is None  # only the prompt survives


def test_dropped_examples_are_counted(workdir, tiny):
    ft = FineTune(compose(tiny + ["data.max_seq_len=60"]))
    ft.tokenizer = byte_tokenizer()
    ft.prepare_data()
    rows = len(read_jsonl(str(CHAT)))
    assert ft.stats["dropped_examples"] > 0
    assert ft.stats["train_examples"] + ft.stats["val_examples"] + ft.stats["dropped_examples"] == rows


def test_split_is_seeded_and_disjoint():
    rows = list(range(50))
    train, val = split(rows, 0.2, seed=1)
    assert (train, val) == split(rows, 0.2, seed=1)
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == rows
    assert split(rows, 0.2, seed=2)[1] != val
    assert len(split(rows, 7, seed=1)[1]) == 7


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("content,expected", [
    ([], "is empty"),
    (["", "   "], "is empty"),
    (['{"conversations": []}', "{not json"], ":2: not valid JSON"),
])
def test_unreadable_files_name_the_file_and_line(tmp_path, content, expected):
    path = write(tmp_path / "d.jsonl", content)
    with pytest.raises(FtlabError, match=expected) as err:
        read_jsonl(path)
    assert str(tmp_path / "d.jsonl") in str(err.value) and "\n" not in str(err.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(FtlabError, match="not found; set data.path="):
        read_jsonl(str(tmp_path / "nope.jsonl"))
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FtlabError, match="cannot be read as UTF-8"):
        read_jsonl(str(tmp_path / "bin.jsonl"))


@pytest.mark.parametrize("row,expected", [
    ({"messages": []}, "expected a non-empty 'conversations' list"),
    ({"conversations": [{"role": "robot", "content": "hi"}]}, "conversations\\[0\\] must be"),
    ({"conversations": [{"role": "user", "content": 3}]}, "conversations\\[0\\] must be"),
    ({"conversations": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
])
def test_bad_rows_name_the_row(row, expected):
    with pytest.raises(FtlabError, match=expected) as err:
        to_conversation(row, "train.jsonl:7")
    assert str(err.value).startswith("train.jsonl:7: ")


def test_bad_row_stops_the_run_before_the_model_loads(workdir, tiny, tmp_path):
    bad = write(tmp_path / "bad.jsonl", [json.dumps({"conversations": [{"role": "user", "content": "x"}]})] * 20)
    with pytest.raises(FtlabError, match="bad.jsonl:1: the conversation has no assistant turn"):
        FineTune(compose(tiny + [f"data.path={bad}"])).run()
    assert not list((workdir / "outputs").glob("*/*"))  # nothing half-written left behind
