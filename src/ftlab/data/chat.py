"""Conversations to training examples: chat template rendering and assistant-only labels.

The supervised part of each assistant turn is found by rendering the conversation incrementally with the
tokenizer's own template, not by searching for marker strings a template may spell or tokenise differently:
  prefix  = render(messages[:i], add_generation_prompt=True)   # everything before turn i's content
  through = render(messages[:i + 1])                           # ... plus the content and its end-of-turn
Turn i supervises the characters from len(prefix) to the end of the last special token in `through`
(the end-of-turn token: <|im_end|>, <|eot_id|>, </s> ...), so the model learns to stop, but not the
separator whitespace after it. Tokens whose characters start in a supervised span get labels; all
others get IGNORE. The rows themselves are checked before this, in formats.py.

Tool calling: an assistant turn's tool calls are part of its rendered turn, so they are learnt like its text;
tool results (role "tool") are prompt, never learnt. The tool definitions a row offers travel with its messages
(a Conversation: a list of messages with a `tools` attribute) to apply_chat_template(..., tools=...). A template
that drops the calls, the results or the definitions is refused in one line rather than trained on silently (a
ConfigError: the template, not the row, is at fault, so data.skip_bad_rows does not skip it).
An assistant turn with weight 0 (OpenAI's per-message weight) is rendered as context and not learnt.
"""

import json
from typing import List, Optional

from ftlab.utils.errors import ConfigError, FtlabError

IGNORE = -100  # the label value Hugging Face losses skip
TOOLS_FIX = "set data.chat_template=chatml or use a model whose template supports tools"


class Conversation(list):
    """A list of messages that also carries the row's tool definitions (OpenAI JSON schemas; None: no tools).
    It is a list wherever messages are used; slices and concatenations keep the tools, so a prompt cut from a
    conversation (prompts.split_reference) renders with the tools it was trained with."""

    def __init__(self, messages=(), tools: Optional[list] = None):
        super().__init__(messages)
        self.tools = tools or None

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return Conversation(item, self.tools) if isinstance(index, slice) else item

    def __add__(self, other):
        return Conversation(list(self) + list(other), self.tools)

    def __radd__(self, other):  # [system turn] + conversation: Python asks the subclass first
        return Conversation(list(other) + list(self), self.tools)

    def copy(self):
        return Conversation(self, self.tools)

    def __repr__(self):
        return f"Conversation({list.__repr__(self)}, tools={self.tools!r})"


def tools_of(messages, tools: Optional[list] = None) -> Optional[list]:
    """The tool definitions to render `messages` with: `tools` when given, else those the messages carry."""
    return (tools if tools is not None else getattr(messages, "tools", None)) or None


def _render(tokenizer, messages, generation_prompt: bool, where: str, tools: Optional[list] = None) -> str:
    if not messages:
        return ""
    from jinja2 import TemplateError  # here, not at the top: --help and the refusals list the formats that use this

    try:
        return tokenizer.apply_chat_template(
            list(messages), tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )
    except TemplateError as e:  # templates raise on shapes they refuse (e.g. roles that do not alternate)
        raise FtlabError(
            f"{where}: the chat template refuses this conversation ({e}); fix the row or set data.chat_template"
        ) from None


def _uses_tools(messages, tools) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def _argument_names(arguments) -> list:
    if isinstance(arguments, str):  # a JSON string, as OpenAI sends it (formats.py makes rows' arguments objects)
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return []
    return [str(k) for k in arguments] if isinstance(arguments, dict) else []


def _check_calls_rendered(turn: str, message: dict, where: str) -> None:
    """Each tool call of an assistant turn must show in that turn's rendered text: its name and argument names."""
    for call in message["tool_calls"]:
        function = call.get("function", call)
        parts = [function["name"], *_argument_names(function.get("arguments"))]
        if not all(part in turn for part in parts):
            raise ConfigError(
                f"{where}: the chat template does not render tool calls (its output lacks the call to "
                f"{function['name']}); {TOOLS_FIX}"
            )


def _check_results_rendered(full: str, messages, where: str) -> None:
    """Each tool result must show in the rendered text, verbatim or JSON-quoted (Llama 3.1's template quotes it)."""
    for j, m in enumerate(messages):
        if m["role"] != "tool":
            continue
        content = m["content"]
        if content not in full and json.dumps(content, ensure_ascii=False)[1:-1] not in full:
            raise ConfigError(
                f"{where}: the chat template does not render tool results (its output lacks the result in "
                f"messages[{j}]{' of ' + m['name'] if m.get('name') else ''}); {TOOLS_FIX}"
            )


def _check_tools_rendered(tokenizer, messages, full: str, tools: list, where: str) -> None:
    """The tool definitions must change the rendered text: a template that ignores `tools` hides them."""
    if _render(tokenizer, messages, False, where) == full:
        name = tools[0].get("function", tools[0]).get("name", "the first tool")
        raise ConfigError(
            f"{where}: the chat template does not render tool definitions (its output lacks the definition "
            f"of {name} from data.columns.tools); {TOOLS_FIX}"
        )


def supervised_spans(tokenizer, messages: List[dict], where: str, train_on: str, tools: Optional[list] = None) -> tuple:
    """The full rendered text and the (start, end) character spans to learn: every assistant turn (with its
    end-of-turn marker) but those of weight 0, only the last of them, or (train_on="all") the whole text.
    `tools`: the tool definitions to render with; None: those `messages` carries (a Conversation), if any."""
    tools = tools_of(messages, tools)
    full = _render(tokenizer, messages, False, where, tools)
    with_tools = _uses_tools(messages, tools)
    if train_on == "all" and not with_tools:
        return full, [(0, len(full))]
    specials = [s for s in tokenizer.all_special_tokens if s]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True, where, tools)
        through = _render(tokenizer, messages[: i + 1], False, where, tools)
        if not (through.startswith(prefix) and full.startswith(through)):
            raise FtlabError(
                f"{where}: the chat template does not render turn {i} as a continuation of the "
                "turns before it, so its assistant tokens cannot be located; set data.chat_template"
            )
        turn = through[len(prefix) :]
        if m.get("tool_calls"):
            _check_calls_rendered(turn, m, where)
        if m.get("weight", 1) == 0:  # context: rendered, not learnt
            continue
        # the end-of-turn marker: the last special token in the turn; a template whose marker is not a special
        # token of this vocabulary (see templates.py) ends the turn where its trailing whitespace starts
        ends = [turn.rfind(s) + len(s) for s in specials if s in turn]
        end = max(ends) if ends else len(turn.rstrip())
        spans.append((len(prefix), len(prefix) + end))
    if with_tools:
        _check_results_rendered(full, messages, where)
        if tools:
            _check_tools_rendered(tokenizer, messages, full, tools, where)
    if train_on == "all":
        return full, [(0, len(full))]
    return full, spans[-1:] if train_on == "last_assistant" else spans


def tokenize_conversation(
    tokenizer, messages: List[dict], max_len: int, where: str, train_on: str, tools: Optional[list] = None
) -> Optional[dict]:
    """input_ids and labels for one conversation, truncated to `max_len`; None when truncation removed
    every supervised token (the caller counts it as dropped: an all-masked example teaches nothing).
    `tools`: the tool definitions to render with; None: those `messages` carries (a Conversation), if any."""
    assistant = [m for m in messages if m["role"] == "assistant"]
    if train_on != "all" and assistant and all(m.get("weight", 1) == 0 for m in assistant):
        raise FtlabError(
            f"{where}: every assistant turn has weight 0, so there is nothing to learn; give one weight 1 "
            "or drop the row"
        )
    full, spans = supervised_spans(tokenizer, messages, where, train_on, tools)
    ids, offsets = _encode(tokenizer, full, {b for span in spans for b in span})
    labels = []
    for token, (start, _end) in zip(ids, offsets):
        inside = any(s <= start < e for s, e in spans)
        labels.append(token if inside else IGNORE)
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def _encode(tokenizer, text: str, bounds: set) -> tuple:
    """Token ids and character offsets of `text`, encoded piece by piece between the span boundaries. Then the
    text before each answer is tokenized exactly as an inference prompt ending there is (tokenizers treat the end
    of a text differently: SmolLM2 makes "\n\n" one token at the end of a prompt but two before "26"), the
    answer starts on a token boundary as it does when generated, and no token mixes a label with context (where
    a template's markers are plain text, SmolLM2 would merge the "|><" of "<|eot_id|><|start_header_id|>")."""
    # the template already wrote BOS and friends into the text, so the tokenizer must not add them again
    ids, offsets = [], []
    cuts = sorted({0, len(text), *bounds})
    for a, b in zip(cuts, cuts[1:]):
        piece = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
        ids += piece["input_ids"]
        offsets += [(a + s, a + e) for s, e in piece["offset_mapping"]]
    return ids, offsets


def prompt_ids(tokenizer, messages: List[dict], where: str, train_on: str, tools: Optional[list] = None) -> tuple:
    """(text, token ids) of the prompt that asks for the next assistant turn after `messages`, tokenized exactly
    as tokenize_conversation tokenizes the same text in training (split at the same turn boundaries), so the
    model sees at inference the tokens it learned from. `tools` as in tokenize_conversation."""
    tools = tools_of(messages, tools)
    text = _render(tokenizer, messages, True, where, tools)
    bounds = set()
    if any(m["role"] == "assistant" for m in messages) and train_on != "all":
        _, spans = supervised_spans(tokenizer, messages, where, train_on, tools)
        bounds = {b for span in spans for b in span if b < len(text)}
    ids, _ = _encode(tokenizer, text, bounds)
    return text, ids


def end_of_turn(tokenizer) -> str:
    """The text the chat template closes an assistant turn with (<|im_end|>, <|eot_id|> ...): what
    supervised_spans trains after an answer; generation stops there. "" when the template writes none."""
    full, [(start, end)] = supervised_spans(
        tokenizer,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
        "the chat template",
        "assistant",
    )
    return full[start:end].split("ok", 1)[-1].strip()


def stop_ids(tokenizer) -> List[int]:
    """The tokens that end an answer: EOS, and the end-of-turn marker where the vocabulary has it as one token."""
    stop = {tokenizer.eos_token_id}
    marker = end_of_turn(tokenizer)
    marker_id = tokenizer.convert_tokens_to_ids(marker) if marker else None
    if marker_id is not None and marker_id != tokenizer.unk_token_id:
        stop.add(marker_id)
    return sorted(stop - {None})
