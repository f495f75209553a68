"""Tokenized data is cached by everything that shapes it: a re-run skips tokenizing, any change re-tokenizes."""

import pytest

from conftest import prepare_data, qa_rows, write_rows
from ftlab import FineTune


class Prepare:
    """prepare(*overrides) -> (FineTune, came from the cache?) on one data file and one cache dir."""

    def __init__(self, tmp_path, capsys):
        self.cache, self.capsys = tmp_path / "cache", capsys
        self.data = write_rows(tmp_path / "d.jsonl", qa_rows(30))

    def __call__(self, *overrides, cls=FineTune):
        data = prepare_data(f"cache_dir={self.cache}", f"data.path={self.data}", *overrides, cls=cls)
        return data, "tokenized data: from the cache" in self.capsys.readouterr().out

    def entries(self):
        return sorted(p.name for p in (self.cache / "data").glob("*.pt"))


@pytest.fixture
def prepare(tmp_path, capsys):
    return Prepare(tmp_path, capsys)


def test_second_run_loads_the_same_examples_from_the_cache(prepare):
    first, hit = prepare()
    assert not hit and len(prepare.entries()) == 1
    second, hit = prepare()
    assert hit and len(prepare.entries()) == 1
    for name in ("train", "validation"):
        assert second.prepared.splits[name].items == first.prepared.splits[name].items
    assert second.data_format == "qa" and second.stats == first.stats


class OwnRows(FineTune):
    def to_conversation(self, row, where, fmt):
        return [{"role": "user", "content": row["question"].upper()}, {"role": "assistant", "content": row["answer"]}]


@pytest.mark.parametrize(
    "change",
    [
        ["data.max_seq_len=64"],
        ["data.chat_template=llama3"],
        ["data.train_on=all"],
        ["data.format=qa"],
        ["data.system_prompt=Be brief."],
        ["data.val_size=3"],
        ["seed=7"],
        ["data.skip_bad_rows=true"],
        "edit-file",
        "subclass",
    ],
)
def test_any_change_that_shapes_the_tokens_misses_the_cache(change, prepare):
    prepare()
    if change == "edit-file":
        with open(prepare.data, "a") as f:
            f.write('{"question": "new?", "answer": "yes"}\n')
        _, hit = prepare()
    elif change == "subclass":
        _, hit = prepare(cls=OwnRows)
    else:
        _, hit = prepare(*change)
    assert not hit and len(prepare.entries()) == 2


def test_options_that_do_not_shape_tokens_share_the_entry(prepare):
    prepare()
    _, hit = prepare("data.batch_size=2", "data.packing=true", "lora.r=4", "optim.lr=1e-3")
    assert hit and len(prepare.entries()) == 1


def test_cache_can_be_turned_off(prepare):
    prepare("data.cache=false")
    _, hit = prepare("data.cache=false")
    assert not hit and not prepare.entries()


def test_a_new_data_option_shapes_the_key_unless_the_schema_says_it_does_not():
    """The key is derived from the schema: an option added to DataOptions changes it without a list to update."""
    import dataclasses

    from omegaconf import OmegaConf

    from ftlab.config.schema import DataOptions, opt
    from ftlab.data import cache

    @dataclasses.dataclass
    class WithNewOptions(DataOptions):
        dedupe: bool = False
        """A new option that changes which rows are kept."""
        prefetch: int = opt(2, shapes_tokens=False)
        """A new option about loading only."""

    def key(**values):
        node = OmegaConf.structured(WithNewOptions(path="d.jsonl", **values))
        return cache.key(node, 42, "fingerprint", _Tokenizer(), [])

    assert "dedupe" in cache.shaping_options(OmegaConf.structured(WithNewOptions()))
    assert key(dedupe=True) != key(dedupe=False)
    assert key(prefetch=8) == key(prefetch=2)
    assert key(batch_size=2) == key(batch_size=16)  # declared shapes_tokens=False in the schema itself
    assert key(max_seq_len=64) != key(max_seq_len=128)


class _Tokenizer:
    """What cache.key reads of a tokenizer, fixed."""

    backend_tokenizer = None
    chat_template = "{{ messages }}"
    special_tokens_map = {}

    def get_vocab(self):
        return {"a": 0}
