"""Several datasets in one run (data.sources): one tiny trained mix shared by the checks of what it printed, wrote and
validated; the cache per source; evaluation, preview and the sweep over a weight; each refusal in one line."""

import json
import random

import pytest

from conftest import CHAT, prepare_data, qa_rows, run_cli, run_dirs, run_main, write_rows
from ftlab import FineTune, compose
from ftlab.config.checks import validate
from ftlab.data import mix
from ftlab.data.splits import Prepared, Split
from ftlab.sweeps import precheck
from ftlab.utils.errors import ConfigError
from test_train import EXPECTED_FILES, files_under


def sources(chat, faq, chat_extra: str = "weight:3", faq_extra: str = "val_size:1") -> str:
    """data.sources on the command line: the chat file (conversations) and a CSV of questions in columns named
    prompt and completion, mapped for that source alone."""
    return (
        f"data.sources=[{{path:{chat},{chat_extra}}},"
        f"{{path:{faq},columns:{{question:prompt,answer:completion}},{faq_extra}}}]"
    )


@pytest.fixture(scope="module")
def faq(tmp_path_factory):
    """30 rows of qa in columns of other names than data.columns'."""
    return write_rows(tmp_path_factory.mktemp("faq") / "faq.csv", qa_rows(30, question="prompt", answer="completion"))


def mixed_overrides(faq, cache_dir, *more) -> list:
    return [
        "model=tiny",
        "data=mix",
        sources(CHAT, faq),
        "data.mix=weighted",
        "data.mix_size=40",
        "data.val_size=4",
        "data.test_size=0",
        "data.batch_size=4",
        "trainer.max_steps=2",
        "trainer.val_every_n_steps=2",
        "trainer.precision=32-true",
        "trainer.checkpoint_every_n_steps=1",
        f"cache_dir={cache_dir}",
        *more,
    ]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, cache_dir, faq):
    """One trained tiny run of the two sources, weighted 3:1, 40 training examples: 2 steps."""
    return FineTune(compose(mixed_overrides(faq, cache_dir)), run_dir=tmp_path_factory.mktemp("mixed") / "run").run()


# By hand: chat.jsonl has 32 rows, 4 of them validation (data.val_size) and no test rows: 28 training examples;
# faq.csv 30 rows, 1 validation (its own val_size): 29. Of 40, chat takes round(40 x 3/4) = 30 (all 28 once, then 2
# drawn) and faq round(40 x 1/4) = 10 of its 29.
CHAT_MIX = dict(label="chat", format="conversation", rows_read=32, train_available=28, taken=30, weight=3.0,
                share=0.75, validation=4, test=0)  # fmt: skip
FAQ_MIX = dict(label="faq", format="qa", rows_read=30, train_available=29, taken=10, weight=1.0, share=0.25,
               validation=1, test=0)  # fmt: skip


def test_the_mix_is_drawn_by_weight_and_written_to_data_mix_json(mixed):
    doc = json.loads((mixed.run_dir / "data_mix.json").read_text())
    assert [{k: s[k] for k in CHAT_MIX} for s in doc["sources"]] == [CHAT_MIX, FAQ_MIX]
    assert (doc["mix"], doc["mix_size"], doc["seed"], doc["train_examples"]) == ("weighted", 40, 42, 40)
    assert files_under(mixed.run_dir) == EXPECTED_FILES - {".hydra/hydra.yaml", ".hydra/overrides.yaml"} | {
        "data_mix.json"
    }
    # the run's stats count the mixed set: 40 drawn, every source's validation examples
    assert (mixed["train_examples"], mixed["val_examples"], mixed["data_format"]) == (40, 5, "conversation+qa")
    chat = mixed.data.prepared.parts[0].prepared.splits["train"].items
    drawn = mixed.data.prepared.splits["train"].items[:30]
    assert drawn[:28] == chat and all(x in chat for x in drawn[28:])  # a whole pass, then 2 more drawn


def test_the_mix_is_printed_one_line_per_source(mixed):
    log = (mixed.run_dir / "train.log").read_text()
    assert "data mix: 2 sources, 40 training examples drawn by weight (data.mix_size=40)" in log
    assert "chat: 32 rows read, 28 training examples, 30 taken (x1.1), weight 3 (75%); 4 validation" in log
    assert "faq: 30 rows read, 29 training examples, 10 taken, weight 1 (25%); 1 validation" in log


def test_each_source_is_validated_apart_and_the_whole_loss_weighs_them_by_their_tokens(mixed):
    metrics = json.loads((mixed.run_dir / "metrics.json").read_text())
    kind = mixed.data.prepared.examples
    units = [sum(map(kind.supervised, p.prepared.splits["validation"].items)) for p in mixed.data.prepared.parts]
    for when in ("before", "after"):
        chat, faq = metrics[f"val_loss_chat_{when}"], metrics[f"val_loss_faq_{when}"]
        assert chat != faq
        whole = (chat * units[0] + faq * units[1]) / sum(units)
        assert metrics[f"val_loss_{when}"] == pytest.approx(whole, rel=1e-5)
    log = (mixed.run_dir / "train.log").read_text()  # each source's loss beside the whole, as it is printed
    before = f"{metrics['val_loss_before']:.4f}; chat {metrics['val_loss_chat_before']:.4f}, faq "
    assert f"validation loss before training: {before}{metrics['val_loss_faq_before']:.4f}\n" in log
    assert f"); chat {metrics['val_loss_chat_after']:.4f} (" in log
    assert f", faq {metrics['val_loss_faq_after']:.4f} (" in log
    logged = (mixed.run_dir / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/loss", "val/loss_chat", "val/loss_faq"} <= set(logged)  # validated during the fit too
    card = (mixed.run_dir / "README.md").read_text()
    assert "| validation loss after training, faq | " in card
    data = card.split("## Data")[1].split("## Training")[0]  # each source by its file name and content hash
    assert "- sources (`data.mix=weighted`, 40 training examples):\n  - chat: `chat.jsonl (sha256 " in data
    assert "`, weight 3\n  - faq: `faq.csv (sha256 " in data and str(CHAT.parent) not in data


@pytest.mark.process
def test_two_ranks_validate_each_source_as_one_process(workdir, mixed, faq, cache_dir):
    """Under DDP each rank scores its share of each source and the sums meet; faq's one validation row leaves the
    second rank a filler row, which scores nothing."""
    result = run_cli(*mixed_overrides(faq, cache_dir, "trainer.max_steps=1", "trainer.devices=2"), cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(workdir)
    ddp, single = (
        json.loads((run_dir / "metrics.json").read_text()),
        json.loads((mixed.run_dir / "metrics.json").read_text()),
    )
    for key in ("val_loss_before", "val_loss_chat_before", "val_loss_faq_before"):  # the same adapter at the start
        assert ddp[key] == pytest.approx(single[key], rel=2e-6), key


def test_a_new_weight_or_size_retokenizes_nothing(tmp_path, faq, capsys):
    common = [f"cache_dir={tmp_path / 'cache'}", "data=mix", "data.mix=weighted", "data.val_size=4"]
    first = prepare_data(*common, sources(CHAT, faq), "data.mix_size=40")
    assert "from the cache" not in capsys.readouterr().out
    again = prepare_data(*common, sources(CHAT, faq, chat_extra="weight:1"), "data.mix_size=20")
    out = capsys.readouterr().out
    assert out.count("tokenized data: from the cache") == 2  # each source's own entry
    assert [p.taken for p in first.prepared.parts] == [30, 10] and [p.taken for p in again.prepared.parts] == [10, 10]
    assert again.prepared.parts[1].prepared.splits == first.prepared.parts[1].prepared.splits


def test_concat_takes_every_example_and_a_source_inherits_what_it_leaves_null(tmp_path, faq):
    data = prepare_data(
        f"cache_dir={tmp_path / 'cache'}",
        "data=mix",
        sources(CHAT, faq, chat_extra="label:chats", faq_extra="system_prompt:Be brief."),
        "data.val_size=2",
        "data.system_prompt=Answer.",
    )
    chats, qa = data.prepared.parts
    assert (chats.label, qa.label) == ("chats", "faq")
    assert [len(p.prepared.splits["validation"].items) for p in data.prepared.parts] == [2, 2]  # data.val_size
    assert (chats.taken, qa.taken, data.stats["train_examples"]) == (30, 28, 58)
    assert "Be brief." in data.tokenizer.decode(qa.prepared.splits["train"].items[0]["input_ids"])


def test_evaluation_reads_every_sources_test_split(tmp_path, faq):
    common = [f"cache_dir={tmp_path / 'cache'}", "data=mix", sources(CHAT, faq, "label:chat", "test_size:5")]
    data = prepare_data(*common, "data.test_size=3")
    examples, fingerprint = data.recipe.evaluation_examples(data.tokenizer)
    assert len(examples) == 3 + 5 and fingerprint == data.stats["data_fingerprint"]
    ft = FineTune(compose(["model=tiny", *common, "data.test_size=3", "eval.max_examples=4"]))
    assert len(ft.evaluation_examples(data.tokenizer)[0]) == 4  # the first source's 3, then one of the next


def test_preview_names_the_source_of_each_example(tmp_path, faq, capsys):
    args = [f"cache_dir={tmp_path / 'cache'}", "model=tiny", "data=mix", sources(CHAT, faq), "data.mix=weighted"]
    result = run_main(*args, "-n", "3", module="ftlab.preview", capsys=capsys)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("── example")] == [
        "── example 1 from chat",
        "── example 2 from faq",
        "── example 3 from chat",
    ]


def test_a_sweep_searches_a_sources_weight(tmp_path, faq):
    fixed = ["model=tiny", "data=mix", sources(CHAT, faq), "data.mix=weighted", f"cache_dir={tmp_path}"]
    precheck.check(["sweep=lora", *fixed, "data.sources.1.weight=interval(0.5,4)"], None, None)  # a key it knows
    trial = validate(compose([*fixed, "data.sources.1.weight=2.5"]))  # what a trial's override composes to
    assert [s.weight for s in trial.data.sources] == [3.0, 2.5]


def test_a_mix_of_kinds_is_refused_naming_both_sources():
    parts = [mix.Part(label, Prepared(fmt, kind, {"train": Split([{}])}), 1.0) for label, fmt, kind in
             (("chats", "conversation", "tokens"), ("pairs", "preference", "pair"))]  # fmt: skip
    with pytest.raises(ConfigError, match=r"chats \(conversation\) makes tokens examples, pairs \(preference\) pair"):
        mix.combine(parts, "concat", 0, 42)


def test_draws_take_whole_passes_then_a_seeded_rest():
    assert mix.counts([28, 27], [3.0, 1.0], 40) == [30, 10] and mix.counts([28, 27], [1.0, 1.0], 0) == [28, 28]
    drawn = mix.draw(5, 12, random.Random("42:a"))
    assert drawn[:10] == [0, 1, 2, 3, 4] * 2 and len(set(drawn[10:])) == 2
    assert drawn == mix.draw(5, 12, random.Random("42:a")) and sorted(mix.draw(5, 3, random.Random(1))) == mix.draw(
        5, 3, random.Random(1)
    )


REFUSALS = [
    (["data=demo", "data.sources=[{path:a.jsonl}]"], "set either data.path/data.name or data.sources, not both"),
    (["data.sources=[{weight:2}]"], "data.sources.0 needs exactly one of path and name"),
    (["data.sources=[{path:a.jsonl,name:org/set}]"], "data.sources.0 needs exactly one of path and name"),
    (["data.sources=[{path:a.jsonl,weight:0}]", "data.mix=weighted"], "data.sources.0.weight must be > 0 (got 0.0)"),
    (["data.sources=[{path:a/chat.jsonl},{path:b/chat.csv}]"], "data.sources.1 and data.sources.0 are both labelled"),
    (["data.sources=[{path:a.jsonl,label:'my chats'}]"], "data.sources.0.label=my chats: use letters, digits"),
    (["data.sources=[{path:a.jsonl,weight:3}]"], "data.sources.0.weight=3: data.mix=concat takes every example"),
    (["data.sources=[{path:a.jsonl}]", "data.mix_size=10"], "data.mix_size sizes a weighted mix"),
    (["data.sources=[{name:org/set,val_path:v.jsonl}]"], "data.sources.0.val_path is a local file"),
    (["data.sources=[{path:a.jsonl}]", "data.val_path=v.jsonl"], "data.val_path belongs to one source"),
    (["data=demo", "data.mix=weighted"], "data.mix and data.mix_size mix the datasets of data.sources"),
    (["data.sources=[{path:a.jsonl}]", "data.sources.0.nope=1"], "unknown key data.sources.0.nope: not an ftlab"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,expected", REFUSALS, ids=[e.split(":")[0][:40] for _, e in REFUSALS])
def test_bad_sources_are_refused_in_one_line(overrides, expected, capsys):
    group = [] if any(o.startswith("data=") for o in overrides) else ["data=mix"]
    result = run_main("model=tiny", *group, *overrides, capsys=capsys)
    assert result.returncode == 2 and expected in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_source_of_a_kind_the_method_cannot_train_on_is_named(tmp_path, faq, capsys):
    pairs = write_rows(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "A", "rejected": "B"}] * 12)
    args = ["model=tiny", "data=mix", f"data.sources=[{{path:{CHAT}}},{{path:{pairs}}}]", f"cache_dir={tmp_path}"]
    result = run_main(*args, capsys=capsys)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "data.sources.1 (pairs): method=sft trains on" in result.stderr and "preference format" in result.stderr


def test_a_sources_bad_file_names_its_own_key(tmp_path, capsys):
    args = ["model=tiny", "data=mix", f"data.sources=[{{path:{CHAT}}},{{path:{tmp_path / 'none.jsonl'}}}]"]
    result = run_main(*args, f"cache_dir={tmp_path}", capsys=capsys)
    assert result.returncode == 1 and f"data.sources.1.path={tmp_path / 'none.jsonl'}: no such file" in result.stderr
