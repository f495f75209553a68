"""Tool-calling conversations (OpenAI's shape): assistant tool calls and replies are learnt, tool results never;
templates with tool support render them (the shipped chatml, Qwen2.5's and Llama 3.1's own), those without are
refused in one line; per-message weights; every bad field named in one line; a tiny run trains on them."""

import json
import re
from types import SimpleNamespace

import pytest

from conftest import ASSETS, prepare_data, write_rows
from ftlab import FineTune, compose
from ftlab.data import chat, templates
from ftlab.data.chat import IGNORE, tokenize_conversation
from ftlab.data.formats import conversation as conversation_format
from ftlab.model.source import byte_tokenizer
from ftlab.use import prompts
from ftlab.utils.errors import ConfigError, FtlabError
from test_data import MULTI_TURN, smollm2_source, supervised_runs  # noqa: F401 (smollm2_source: a fixture)

TEMPLATES = ASSETS / "templates"
QWEN = str(TEMPLATES / "qwen2.5-instruct.jinja")  # Qwen2.5-7B-Instruct's chat_template, verbatim
LLAMA = str(TEMPLATES / "llama3.1-instruct.jinja")  # Llama-3.1-8B-Instruct's chat_template, verbatim
COLUMNS = SimpleNamespace(messages=None, tools="tools")
# the ChatML shipped before tool support: conversations without tools must render exactly as it did
OLD_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' "
    "+ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(city: str, id_: str) -> dict:
    return {"id": id_, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}


TWO_CALLS = [  # two calls in one turn, their two results in a row (Qwen2.5 merges them into one user turn)
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [call("Paris", "c1"), call("Rome", "c2")]},
    {"role": "tool", "content": "sunny, 24 C", "tool_call_id": "c1"},
    {"role": "tool", "content": "rain, 18 C", "tool_call_id": "c2"},
    {"role": "assistant", "content": "Paris is sunny (24 C); Rome has rain (18 C)."},
]
ONE_CALL_EACH = [  # one call per turn (Llama 3.1's template takes no more), text beside a call, two rounds
    {"role": "user", "content": "Is it warmer in Oslo or Lima?"},
    {"role": "assistant", "tool_calls": [call("Oslo", "o")]},
    {"role": "tool", "content": "snow, -3 C", "tool_call_id": "o"},
    {"role": "assistant", "content": "Now Lima.", "tool_calls": [call("Lima", "l")]},
    {"role": "tool", "content": "cloudy, 19 C", "tool_call_id": "l"},
    {"role": "assistant", "content": "Lima, at 19 C against -3 C."},
]
SYSTEM = [{"role": "system", "content": "You answer with the tools."}]
RESULTS = ("sunny, 24 C", "rain, 18 C", "snow, -3 C", "cloudy, 19 C")


def qwen_call(city: str) -> str:
    return f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'


def llama_call(city: str) -> str:
    return f'{{"name": "get_weather", "parameters": {{"city": "{city}"}}}}'


# what each template trains on each conversation: the assistant turns, calls rendered its way, with end of turn
EXPECTED = {
    ("chatml", "two"): [qwen_call("Paris") + "\n" + qwen_call("Rome"), "Paris is sunny (24 C); Rome has rain (18 C)."],
    ("chatml", "each"): [qwen_call("Oslo"), "Now Lima.\n" + qwen_call("Lima"), "Lima, at 19 C against -3 C."],
    ("qwen", "two"): [qwen_call("Paris") + "\n" + qwen_call("Rome"), "Paris is sunny (24 C); Rome has rain (18 C)."],
    ("qwen", "each"): [qwen_call("Oslo"), "Now Lima.\n" + qwen_call("Lima"), "Lima, at 19 C against -3 C."],
    # Llama 3.1's template writes a turn's call and not its text
    ("llama3.1", "each"): [llama_call("Oslo"), llama_call("Lima"), "Lima, at 19 C against -3 C."],
}
CASES = list(EXPECTED)
SPECS = {"chatml": "chatml", "qwen": QWEN, "llama3.1": LLAMA}
END = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "llama3.1": "<|eot_id|>"}


def conversation(which: str, system: bool, tools: bool = True) -> chat.Conversation:
    turns = (SYSTEM if system else []) + (TWO_CALLS if which == "two" else ONE_CALL_EACH)
    row = {"messages": turns, **({"tools": [WEATHER]} if tools else {})}
    return conversation_format.turns(row, "row 1", COLUMNS)


def with_template(tokenizer, spec: str):
    tokenizer.chat_template = templates.read(spec)
    return tokenizer


def check_labels(tok, template, which, system, train_on):
    messages = conversation(which, system)
    example = tokenize_conversation(tok, messages, 8192, "row 1", train_on)
    expected = [text + END[template] for text in EXPECTED[(template, which)]]
    assert supervised_runs(tok, example) == (expected[-1:] if train_on == "last_assistant" else expected)
    text = tok.decode(example["input_ids"])
    assert "get_weather" in text.split(expected[0])[0]  # the definitions are in the prompt
    for result in RESULTS[:2] if which == "two" else RESULTS[2:]:
        assert result in text  # rendered, and never learnt:
        assert not any(result in run for run in supervised_runs(tok, example))
    return text


@pytest.mark.parametrize("template,which", CASES, ids=[f"{t}-{w}" for t, w in CASES])
@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
@pytest.mark.parametrize("train_on", ["assistant", "last_assistant"])
def test_calls_and_replies_are_learnt_tool_results_never_byte_tokenizer(template, which, system, train_on):
    text = check_labels(with_template(byte_tokenizer(), SPECS[template]), template, which, system, train_on)
    if template != "llama3.1" and which == "two":  # both results in one user turn, as Qwen2.5 renders them
        assert (
            "<|im_start|>user\n<tool_response>\nsunny, 24 C\n</tool_response>\n<tool_response>\nrain, 18 C\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n" in text
        )


@pytest.mark.slow
@pytest.mark.parametrize("template,which", CASES, ids=[f"{t}-{w}" for t, w in CASES])
@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
def test_calls_and_replies_are_learnt_tool_results_never_smollm2(template, which, system, smollm2_source):  # noqa: F811
    from ftlab.model.load import load_tokenizer

    check_labels(with_template(load_tokenizer(*smollm2_source), SPECS[template]), template, which, system, "assistant")


@pytest.mark.slow
def test_smollm2s_own_template_is_refused_for_tools(smollm2_source):  # noqa: F811
    from ftlab.model.load import load_tokenizer

    tok = load_tokenizer(*smollm2_source)
    with pytest.raises(FtlabError, match="row 1: the chat template does not render tool calls"):
        tokenize_conversation(tok, conversation("two", False), 8192, "row 1", "assistant")


def test_the_shipped_chatml_renders_conversations_without_tools_exactly_as_before():
    new, old = byte_tokenizer(), byte_tokenizer()
    new.chat_template, old.chat_template = templates.read("chatml"), OLD_CHATML
    odd = [{"role": "user", "content": " spaces \n\n and {{ braces }} "}, {"role": "assistant", "content": "\n x\n"}]
    for messages in (MULTI_TURN, MULTI_TURN[1:], MULTI_TURN[:2], MULTI_TURN[:1], odd):
        for generation_prompt in (False, True):
            rendered = new.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
            assert rendered == old.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        for train_on in ("assistant", "last_assistant", "all"):
            assert tokenize_conversation(new, messages, 4096, "t", train_on) == tokenize_conversation(
                old, messages, 4096, "t", train_on
            )
    # and a row read as a conversation (a Conversation, with no tools) renders as the plain list does
    row = conversation_format.turns({"messages": MULTI_TURN}, "row 1", COLUMNS)
    assert row.tools is None and row == MULTI_TURN
    assert tokenize_conversation(new, row, 4096, "t", "assistant") == tokenize_conversation(
        old, MULTI_TURN, 4096, "t", "assistant"
    )


def test_the_shipped_chatml_renders_tools_as_qwen25_does_given_a_system_prompt():
    qwen, chatml = with_template(byte_tokenizer(), QWEN), with_template(byte_tokenizer(), "chatml")
    for which in ("two", "each"):
        messages = conversation(which, system=True)
        for generation_prompt in (False, True):
            kwargs = dict(tools=messages.tools, tokenize=False, add_generation_prompt=generation_prompt)
            assert chatml.apply_chat_template(messages, **kwargs) == qwen.apply_chat_template(messages, **kwargs)
    # without a system prompt chatml writes no default one (Qwen2.5 writes "You are Qwen ...")
    text = chatml.apply_chat_template(conversation("two", system=False), tools=[WEATHER], tokenize=False)
    assert text.startswith("<|im_start|>system\n# Tools\n\n") and "Qwen" not in text


@pytest.mark.parametrize("spec", ["gemma", "mistral", "llama3", "old-chatml"])
def test_a_template_without_tool_support_is_refused_in_one_line(spec):
    tok = byte_tokenizer()  # its own template: the plain ChatML the tiny model ships
    if spec != "old-chatml":
        with_template(tok, spec)
    expected = (
        "row 1: the chat template does not render tool calls (its output lacks the call to get_weather); "
        "set data.chat_template=chatml or use a model whose template supports tools"
    )
    with pytest.raises(FtlabError, match=re.escape(expected)) as e:
        tokenize_conversation(tok, conversation("two", True), 8192, "row 1", "assistant")
    assert "\n" not in str(e.value)
    # tools offered and not called: a template that ignores the definitions hides them from the model
    offered = conversation_format.turns({"messages": MULTI_TURN, "tools": [WEATHER]}, "row 1", COLUMNS)
    with pytest.raises(FtlabError, match=r"row 1: the chat template does not render tool definitions .*get_weather"):
        tokenize_conversation(tok, offered, 8192, "row 1", "assistant")


def test_a_template_that_drops_tool_results_is_refused(tmp_path):
    drops = tmp_path / "drops.jinja"  # renders calls, skips tool turns
    drops.write_text(
        "{% for m in messages %}{% if m['role'] != 'tool' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% for c in m['tool_calls'] or [] %}{{ c['function'] | tojson }}{% endfor %}<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = with_template(byte_tokenizer(), str(drops))
    with pytest.raises(FtlabError, match=r"row 1: the chat template does not render tool results .*messages\[2\]"):
        tokenize_conversation(tok, conversation("two", False, tools=False), 8192, "row 1", "assistant")


def test_weight_0_turns_are_context_weight_1_turns_are_learnt():
    turns = [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Lyon.", "weight": 0},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Paris.", "weight": 1},
        {"role": "user", "content": "And Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    tok = byte_tokenizer()
    messages = conversation_format.turns({"messages": turns}, "row 1", COLUMNS)
    example = tokenize_conversation(tok, messages, 4096, "row 1", "assistant")
    assert supervised_runs(tok, example) == ["Paris.<|im_end|>", "Rome.<|im_end|>"]
    assert "Lyon." in tok.decode(example["input_ids"])  # rendered as context
    # the weight is not part of what templates render
    assert tok.decode(example["input_ids"]) == tok.apply_chat_template(
        [{k: v for k, v in m.items() if k != "weight"} for m in messages], tokenize=False
    )
    # last_assistant: the last turn that is learnt at all
    last_is_context = turns[:5] + [dict(turns[5], weight=0)]
    messages = conversation_format.turns({"messages": last_is_context}, "row 1", COLUMNS)
    assert supervised_runs(tok, tokenize_conversation(tok, messages, 4096, "r", "last_assistant")) == [
        "Paris.<|im_end|>"
    ]
    # a weight-0 tool call is context too
    calls = conversation("each", False)
    calls[1]["weight"] = 0
    tok = with_template(byte_tokenizer(), "chatml")
    runs = supervised_runs(tok, tokenize_conversation(tok, calls, 8192, "row 1", "assistant"))
    assert runs == [text + "<|im_end|>" for text in EXPECTED[("chatml", "each")][1:]]
    nothing = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "weight": 0}]
    with pytest.raises(FtlabError, match="row 1: every assistant turn has weight 0, so there is nothing to learn"):
        tokenize_conversation(
            tok, conversation_format.turns({"messages": nothing}, "row 1", COLUMNS), 99, "row 1", "assistant"
        )


def test_tools_and_calls_as_json_strings_and_bare_functions_are_read():
    """Datasets often store tools and calls JSON-encoded (CSV, Parquet) or without OpenAI's "function" wrapper."""
    row = {
        "tools": json.dumps([WEATHER["function"]]),  # a bare function definition, JSON-encoded
        "messages": [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "tool_calls": json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}}])},
            {"role": "tool", "content": {"sky": "sunny"}},  # a structured result becomes its JSON text
            {"role": "assistant", "content": "Sunny."},
        ],
    }
    messages = conversation_format.turns(row, "row 1", COLUMNS)
    assert messages.tools == [WEATHER]
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }
    assert messages[2] == {"role": "tool", "content": '{"sky": "sunny"}'}
    assert conversation_format.turns({"messages": MULTI_TURN, "tools": []}, "row 1", COLUMNS).tools is None


def test_a_conversation_keeps_its_tools_when_cut_into_a_prompt_and_the_prompt_tokens_match_training():
    tok = with_template(byte_tokenizer(), "chatml")
    messages = conversation("two", system=True)
    example = tokenize_conversation(tok, messages, 8192, "row 1", "assistant")
    prompt = messages[:-1]  # all but the last answer, as evaluation and inference cut it
    assert prompt.tools == [WEATHER] and prompt[-1]["role"] == "tool"
    text, ids = chat.prompt_ids(tok, prompt, "row 1", "assistant")
    labels = example["labels"]
    last_answer = max(i for i, label in enumerate(labels) if label != IGNORE and labels[i - 1] == IGNORE)
    assert ids == example["input_ids"][:last_answer] and "get_weather" in text.split("<|im_start|>user")[0]
    assert ([{"role": "system", "content": "x"}] + prompt[1:]).tools == [WEATHER]
    # a prompts file line with tools (ftlab.infer input=...) keeps them
    line = {"messages": SYSTEM + TWO_CALLS + [{"role": "user", "content": "And Oslo?"}], "tools": [WEATHER]}
    read = prompts.from_row(line, "prompts.jsonl:1", COLUMNS, "Be brief.")
    assert read.messages.tools == [WEATHER] and read.messages[-1]["content"] == "And Oslo?"
    assert "<tools>" in chat.prompt_ids(tok, read.messages, "prompts.jsonl:1", "assistant")[0]


def test_an_explicit_tools_argument_wins_over_the_conversations_own():
    tok = with_template(byte_tokenizer(), "chatml")
    plain = [dict(m) for m in conversation("two", system=False)]  # a plain list: the tools passed beside it
    example = tokenize_conversation(tok, plain, 8192, "row 1", "assistant", tools=[WEATHER])
    assert example == tokenize_conversation(tok, conversation("two", system=False), 8192, "row 1", "assistant")


def bad(turns, **row):
    return {"messages": turns, **row}


USER = {"role": "user", "content": "Weather in Paris?"}
CALLS = {"role": "assistant", "tool_calls": [call("Paris", "c1")]}
BAD = [
    (bad([USER, {"role": "assistant", "content": None}]), r"messages\[1\]: an assistant turn needs 'content'.*"),
    (bad([USER, {"role": "assistant"}]), r"messages\[1\]: an assistant turn needs 'content' .* or 'tool_calls'"),
    (
        bad([USER, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}]),
        r"messages\[1\].tool_calls\[0\]: no function name; write the call as \{\"type\": \"function\"",
    ),
    (
        bad([USER, {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": "{city"}}]}]),
        r"messages\[1\].tool_calls\[0\]: the arguments of get_weather is not valid JSON \(.*\); write them as a JSON",
    ),
    (
        bad([USER, {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": "[1]"}}]}]),
        r"messages\[1\].tool_calls\[0\]: the arguments of get_weather must be a JSON object, got list",
    ),
    (bad([USER, {"role": "assistant", "tool_calls": "nope"}]), r"messages\[1\]: 'tool_calls' is not valid JSON"),
    (
        bad([USER, {"role": "assistant", "tool_calls": {"a": 1}}]),
        r"messages\[1\]: 'tool_calls' must be a non-empty list",
    ),
    (bad([USER, {"role": "assistant", "tool_calls": ["x"]}]), r"messages\[1\].tool_calls\[0\] must be an object"),
    (
        bad([USER, {"role": "assistant", "tool_calls": [{"type": "code", "function": {"name": "f"}}]}]),
        r"tool_calls\[0\]: type 'code' is not a function call",
    ),
    (bad([USER, CALLS, {"role": "tool"}]), r"messages\[2\]: a tool turn needs 'content', the result"),
    (bad([USER, CALLS, {"role": "tool", "content": " "}]), r"messages\[2\]: 'content' is an empty string"),
    (bad([USER, {"role": "tool", "content": "sunny"}]), r"messages\[1\]: a tool result must follow the assistant turn"),
    (
        bad([USER, CALLS, {"role": "tool", "content": "sunny", "tool_call_id": "zz"}]),
        r"messages\[2\]: tool_call_id 'zz' answers none of the calls before it \(ids: c1\)",
    ),
    (
        bad([{"role": "user", "content": "hi", "tool_calls": [call("Paris", "c")]}]),
        r"messages\[0\]: 'tool_calls' belongs on assistant turns only, not on a user turn",
    ),
    (
        bad([USER, {"role": "assistant", "content": "x", "weight": 0.5}]),
        r"messages\[1\]: 'weight' must be 0 \(context, not learnt\) or 1 \(learnt\), got 0.5",
    ),
    (
        bad([USER, {"role": "assistant", "content": "x", "weight": "1"}]),
        r"messages\[1\]: 'weight' must be 0 .* got '1'",
    ),
    (
        bad([{"role": "user", "content": "hi", "weight": 0}]),
        r"messages\[0\]: 'weight' belongs on assistant turns only, not on a user turn; remove it",
    ),
    (
        bad([USER, CALLS, {"role": "tool", "content": "x", "tool_call_id": 3}]),
        r"messages\[2\]: 'tool_call_id' must be text, got int",
    ),
    (bad([USER, CALLS], tools={"a": 1}), r"row 1: column 'tools' must be a list of tools, got dict"),
    (bad([USER, CALLS], tools="[{"), r"row 1: column 'tools': it is not valid JSON"),
    (bad([USER, CALLS], tools=[{"type": "function", "function": {}}]), r"tools\[0\]: a tool needs a function name"),
    (
        bad([USER, CALLS], tools=[{"name": "f", "parameters": "x"}]),
        r"tools\[0\]: 'parameters' of f must be a JSON schema object",
    ),
    (
        bad([USER, CALLS], tools=[{"type": "function", "function": {"name": "get_time"}}]),
        r"tool_calls\[0\]: calls get_weather, which the row's tools do not define \(tools: get_time\)",
    ),
    (bad([{"role": "function", "content": "x"}]), r"unknown role 'function'; use one of .*assistant, gpt, tool"),
]


@pytest.mark.parametrize("row,expected", BAD, ids=[f"bad-{i}" for i in range(len(BAD))])
def test_every_bad_tool_field_is_named_in_one_line(row, expected):
    with pytest.raises(FtlabError, match=expected) as e:
        conversation_format.turns(row, "row 1", COLUMNS)
    assert str(e.value).startswith("row 1: ") and "\n" not in str(e.value)


def tool_rows(n: int) -> list:
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito"]
    rows = []
    for i in range(n):
        city = cities[i % len(cities)]
        rows.append(
            {
                "tools": [WEATHER],
                "messages": [
                    {"role": "user", "content": f"Weather in {city}?"},
                    {"role": "assistant", "content": None, "tool_calls": [call(city, f"c{i}")]},
                    {"role": "tool", "content": f"{i % 30} C", "tool_call_id": f"c{i}"},
                    {"role": "assistant", "content": f"{city}: {i % 30} C."},
                ],
            }
        )
    return rows


def test_a_bad_tool_row_in_a_file_names_file_line_and_field(tmp_path):
    rows = tool_rows(12)
    rows[2]["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{city: Paris}"
    path = write_rows(tmp_path / "tools.jsonl", rows)

    def prepare(*overrides):
        return prepare_data(f"cache_dir={tmp_path / 'cache'}", f"data.path={path}", *overrides)

    expected = r"tools.jsonl:3: messages\[1\].tool_calls\[0\]: the arguments of get_weather is not valid JSON"
    with pytest.raises(FtlabError, match=expected + r".*; or set data.skip_bad_rows=true"):
        prepare("data.chat_template=chatml")
    # the tiny model's own template renders no tools: that is the template's fault, not a row's, so skipping
    # bad rows would not help and the message does not offer it
    with pytest.raises(ConfigError, match=r"tools.jsonl:1: the chat template does not render tool calls") as e:
        prepare("data.skip_bad_rows=true")
    assert "skip_bad_rows" not in str(e.value)


def test_a_tiny_run_trains_on_tool_calling_conversations(workdir, tiny):
    path = write_rows(workdir / "tools.jsonl", tool_rows(40))
    overrides = [o for o in tiny if not o.startswith("data.path=")] + [f"data.path={path}", "data.max_seq_len=1024"]
    # the tiny model's own template is plain ChatML, which renders no tools: the shipped chatml does
    stats = FineTune(compose(overrides + ["data.chat_template=chatml", "trainer.max_steps=6", "optim.lr=3e-3"])).run()
    assert stats["data_format"] == "conversation" and stats["dropped_examples"] == 0
    example = stats.data.prepared.splits["train"].items[0]
    text = stats.tokenizer.decode(example["input_ids"])
    learnt = supervised_runs(stats.tokenizer, example)
    assert "<tools>" in text and "<tool_response>" in text
    assert learnt[0].startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": ')
    assert len(learnt) == 2 and all(run.endswith("<|im_end|>") for run in learnt)
    assert stats["val_loss_after"] < stats["val_loss_before"]  # it learns
    assert (stats.run_dir / "adapter" / "chat_template.jinja").read_text() == templates.read("chatml")
