"""The key=value command line of infer/evaluate/export, run-config overrides, and prompts files for infer."""

import json

import pytest

from ftlab import compose
from ftlab.config.overrides import apply_overrides, parse
from ftlab.config.schema import EvaluateCommand, ExportCommand, InferCommand
from ftlab.data.formats import columns_schema
from ftlab.use import prompts
from ftlab.utils.errors import ConfigError, FtlabError

COLUMNS = columns_schema()()  # the data.columns section: every format's column names


# ── overrides.parse ───────────────────────────────────────────────────────────────────────────────────────


def test_parse_keeps_prompt_text_as_typed_and_passes_run_config_keys_on():
    options, overrides = parse(["run=x", "prompt=Note: a colon", "generation.max_new_tokens=5"], InferCommand)
    assert options.run == "x"
    assert options.prompt == "Note: a colon"  # YAML would have read a mapping {Note: a colon}
    assert overrides == ["generation.max_new_tokens=5"]


@pytest.mark.parametrize(
    "word, expected",
    [
        ("prompt=123", "123"),  # not the int 123
        ("prompt=yes", "yes"),  # not the bool True
        ("prompt=[a, b]", "[a, b]"),  # not a list
        ("prompt=x = y + 1", "x = y + 1"),  # only the first = splits key from value
    ],
)
def test_parse_never_reads_text_options_as_yaml(word, expected):
    options, _ = parse(["run=x", word], InferCommand)
    assert options.prompt == expected


def test_parse_reads_bool_options():
    options, _ = parse(["run=x", "base_only=true"], InferCommand)
    assert options.base_only is True
    options, _ = parse(["run=x", "check=false", "dtype=bfloat16"], ExportCommand)
    assert (options.check, options.dtype) == (False, "bfloat16")


def test_parse_defaults_and_run_config_overrides_for_evaluate():
    options, overrides = parse(["run=r", "eval.split=validation", "quant=4bit", "seed=3"], EvaluateCommand)
    assert (options.run, options.output) == ("r", None)
    assert overrides == ["eval.split=validation", "quant=4bit", "seed=3"]


def test_parse_unknown_key_names_it_and_lists_the_options():
    with pytest.raises(ConfigError) as e:
        parse(["run=x", "promt=hi"], InferCommand)
    assert "unknown option 'promt'" in str(e.value)
    assert "base_only, input, output, prompt, run, system" in str(e.value)


def test_parse_word_without_equals_sign():
    with pytest.raises(ConfigError, match="'hello' is not key=value"):
        parse(["run=x", "hello"], InferCommand)


def test_parse_empty_key():
    with pytest.raises(ConfigError, match="'=hi' is not key=value"):
        parse(["run=x", "=hi"], InferCommand)


def test_parse_requires_run():
    with pytest.raises(ConfigError, match="run= is required; e.g. run=outputs/"):
        parse(["prompt=hi"], InferCommand)


@pytest.mark.parametrize("value, got", [("maybe", "maybe"), ("1", "1"), ("null", "None")])
def test_parse_bool_option_refuses_a_non_bool(value, got):
    with pytest.raises(ConfigError, match=rf"base_only must be true or false \(got {got}\)"):
        parse(["run=x", f"base_only={value}"], InferCommand)


def test_parse_export_dtype_outside_its_choices():
    with pytest.raises(ConfigError) as e:
        parse(["run=x", "dtype=float64"], ExportCommand)
    assert "dtype must be one of auto, float32, bfloat16, float16 (got float64)" in str(e.value)


# ── overrides.apply_overrides ─────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def saved():
    """A run's saved config, as training leaves it."""
    return compose(["model=tiny"])


def test_group_override_replaces_the_whole_group(saved):
    cfg = apply_overrides(saved, ["quant=4bit"])
    assert cfg.quant.bits == 4
    assert cfg.quant.quant_type == "nf4"
    assert apply_overrides(cfg, ["quant=none"]).quant.bits is None
    # the groups whose options are registered in code or assembled from the rooms, too
    cfg = apply_overrides(saved, ["method=simpo", "tracker=mlflow"])
    assert (cfg.method.name, cfg.method.beta, cfg.tracker.name) == ("simpo", 2.0, "mlflow")
    assert cfg.tracker.mlflow.log_model is True  # the tracker's own settings, kept


def test_key_override_sets_it_without_touching_the_saved_config(saved):
    before = saved.generation.max_new_tokens
    cfg = apply_overrides(saved, ["generation.max_new_tokens=7", "generation.do_sample=true"])
    assert (cfg.generation.max_new_tokens, cfg.generation.do_sample) == (7, True)
    assert saved.generation.max_new_tokens == before


def test_top_level_plain_key_override(saved):
    assert apply_overrides(saved, ["seed=7"]).seed == 7


def test_unknown_group_option_names_the_choices(saved):
    with pytest.raises(ConfigError, match="quant=3bit: no such option; choose one of: 4bit, 8bit, none"):
        apply_overrides(saved, ["quant=3bit"])


def test_invalid_value_is_refused_by_validation(saved):
    with pytest.raises(ConfigError, match=r"generation.top_p must be <= 1 \(got 2.0\)"):
        apply_overrides(saved, ["generation.top_p=2"])


def test_misspelled_run_config_key_is_refused(saved):
    with pytest.raises(ConfigError, match="unknown key generation.max_tokens"):
        apply_overrides(saved, ["generation.max_tokens=5"])


# ── prompts.read: the shapes of a line ───────────────────────────────────────────────────────────────────


def _write(tmp_path, *lines, name="prompts.jsonl"):
    """Lines as given: dicts and other values are written as JSON, str as raw text."""
    path = tmp_path / name
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def _one(tmp_path, row, system=None):
    [prompt] = prompts.read(_write(tmp_path, row), COLUMNS, system)
    return prompt


USER_HI = {"role": "user", "content": "hi"}


def test_prompt_line(tmp_path):
    p = _one(tmp_path, {"prompt": "hi"})
    assert (p.messages, p.reference) == ([USER_HI], None)


def test_prompt_line_with_its_own_system(tmp_path):
    p = _one(tmp_path, {"prompt": "hi", "system": "be brief"})
    assert p.messages == [{"role": "system", "content": "be brief"}, USER_HI]


def test_system_option_applies_to_lines_without_one(tmp_path):
    path = _write(tmp_path, {"prompt": "hi"}, {"prompt": "hi", "system": "own"})
    first, second = prompts.read(path, COLUMNS, system="default")
    assert first.messages == [{"role": "system", "content": "default"}, USER_HI]
    assert second.messages == [{"role": "system", "content": "own"}, USER_HI]


def test_json_string_line(tmp_path):
    p = _one(tmp_path, '"hi"')
    assert p.messages == [USER_HI]


def test_messages_final_assistant_turn_becomes_the_reference(tmp_path):
    p = _one(tmp_path, {"messages": [USER_HI, {"role": "assistant", "content": "hello"}]})
    assert (p.messages, p.reference) == ([USER_HI], "hello")


def test_sharegpt_conversation(tmp_path):
    p = _one(tmp_path, {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]})
    assert (p.messages, p.reference) == ([USER_HI], "hello")


def test_qa_row_answer_is_the_reference(tmp_path):
    p = _one(tmp_path, {"question": "hi", "answer": "hello"})
    assert (p.messages, p.reference) == ([USER_HI], "hello")


def test_qa_row_without_answer_has_no_reference(tmp_path):
    p = _one(tmp_path, {"question": "hi"})
    assert (p.messages, p.reference) == ([USER_HI], None)


def test_qa_row_keeps_its_system_column(tmp_path):
    p = _one(tmp_path, {"question": "hi", "answer": "hello", "system": "be brief"})
    assert p.messages == [{"role": "system", "content": "be brief"}, USER_HI]


def test_instruction_row_appends_its_input(tmp_path):
    p = _one(tmp_path, {"instruction": "Translate.", "input": "bonjour", "output": "hello"})
    assert (p.messages, p.reference) == ([{"role": "user", "content": "Translate.\n\nbonjour"}], "hello")


def test_instruction_row_without_output_has_no_reference(tmp_path):
    p = _one(tmp_path, {"instruction": "Say hi."})
    assert (p.messages, p.reference) == ([{"role": "user", "content": "Say hi."}], None)


def test_where_is_file_and_line_and_blank_lines_are_skipped(tmp_path):
    path = _write(tmp_path, {"prompt": "one"}, "", "   ", {"prompt": "four"})
    assert [(p.where, p.messages[-1]["content"]) for p in prompts.read(path, COLUMNS)] == [
        (f"{path}:1", "one"),
        (f"{path}:4", "four"),
    ]


def test_a_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_text('{"prompt": "hi"}\n', encoding="utf-8-sig")  # as some Windows editors save it
    assert prompts.read(path, COLUMNS)[0].messages == [USER_HI]


def test_split_reference_keeps_a_conversation_ending_with_a_user_turn():
    p = prompts.split_reference([USER_HI], "f:1")
    assert (p.where, p.messages, p.reference) == ("f:1", [USER_HI], None)


# ── prompts.read: bad lines and files ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "bad, says",
    [
        ("{not json", "not valid JSON"),
        ({"text": "hi"}, "no prompt in this line (keys: text)"),
        ("42", "a JSON int"),
        ({"prompt": ""}, '"prompt" must be non-empty text'),
        ({"prompt": "   "}, '"prompt" must be non-empty text'),
        (
            {"messages": [USER_HI, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "nothing to answer",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "nothing to answer"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "unknown role 'bot'"),
        ({"messages": []}, "must be a non-empty list"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad, says):
    path = _write(tmp_path, {"prompt": "fine"}, bad)
    with pytest.raises(FtlabError) as e:
        prompts.read(path, COLUMNS)
    assert f"{path}:2" in str(e.value)
    assert says in str(e.value)


def test_empty_file(tmp_path):
    path = _write(tmp_path, "", "  ")
    with pytest.raises(FtlabError, match="holds no prompts") as e:
        prompts.read(path, COLUMNS)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(FtlabError, match="no such file") as e:
        prompts.read(path, COLUMNS)
    assert str(path) in str(e.value)
