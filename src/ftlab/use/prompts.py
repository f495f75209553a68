"""Prompts for ftlab.infer, from a JSONL file, one per line, each turned into messages and an optional reference.

A line may be:
  a row in any data format (data/formats/)             {"messages": [...]}, {question, answer?}, {instruction,
                                                        input?, output?}, a preference pair, a KTO row ..., read
                                                        with the run's data.columns; a final assistant turn (the
                                                        answer, the chosen one) is kept as the reference
  {"prompt": "...", "system": "..."}                    one user turn (system optional)
  any other row the run's to_conversation stage takes  (a FineTune subclass's own row format)
  "a JSON string"                                       one user turn
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from ftlab.data.formats import FORMATS
from ftlab.utils.errors import FtlabError

SHAPES = (
    '{"prompt": "..."}, {"messages": [{"role": "user", "content": "..."}]}, or the run\'s data columns '
    "({question} or {instruction}; see data.columns)"
)


@dataclass
class Prompt:
    where: str
    """file:line, for messages and the output's `line`."""
    messages: List[dict]
    """The conversation so far, ending with a user turn."""
    reference: Optional[str] = None
    """The expected answer, when the line brings one."""


def split_reference(messages: List[dict], where: str) -> Prompt:
    """A conversation as prompt + reference: a final assistant turn is the reference, the rest must end with
    a user turn (what a model answers)."""
    reference = None
    if messages and messages[-1]["role"] == "assistant":
        reference, messages = messages[-1]["content"], messages[:-1]
    if not messages or messages[-1]["role"] not in ("user", "tool"):  # a tool's result is answered too
        raise FtlabError(
            f"{where}: the conversation must end with a user turn or a tool result (or one and the expected "
            "assistant answer); there is nothing to answer"
        )
    return Prompt(where, messages, reference)


def from_row(row, where: str, columns, system: Optional[str], to_conversation: Optional[Callable] = None) -> Prompt:
    """One line's prompt. `to_conversation(row, where)`: the run's own row-to-messages stage, tried on a row in
    none of the shapes above."""
    system_turn = [{"role": "system", "content": system}] if system else []
    if isinstance(row, str) and row.strip():
        return Prompt(where, system_turn + [{"role": "user", "content": row}])
    if not isinstance(row, dict):
        raise FtlabError(f"{where}: a JSON {type(row).__name__}; each line must be {SHAPES}")
    messages = next((m for m in (f.prompt(row, where, columns) for f in _by_priority()) if m is not None), None)
    if messages is None and "prompt" in row:
        text = row["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise FtlabError(f'{where}: "prompt" must be non-empty text, got {str(text)[:40]!r}')
        own = row.get("system")
        turn = [{"role": "system", "content": own}] if isinstance(own, str) and own.strip() else system_turn
        return Prompt(where, turn + [{"role": "user", "content": text}])
    if messages is None:
        messages = _own_format(row, where, to_conversation)
    if system and (not messages or messages[0]["role"] != "system"):
        messages = system_turn + messages
    return split_reference(messages, where)


def _by_priority() -> list:
    return sorted(FORMATS, key=lambda f: f.priority)


def _own_format(row: dict, where: str, to_conversation: Optional[Callable]) -> List[dict]:
    keys = ", ".join(map(str, row)) or "none"
    shapes_error = FtlabError(f"{where}: no prompt in this line (keys: {keys}); each line must be {SHAPES}")
    if to_conversation is None:
        raise shapes_error
    try:
        conversation = to_conversation(row, where)
    except FtlabError:  # the run's row format does not take it either: name the shapes that work
        raise shapes_error from None
    if not isinstance(conversation, list):  # not messages: a text document asks nothing
        raise shapes_error
    return conversation


def read(path: Path, columns, system: Optional[str] = None, to_conversation: Optional[Callable] = None) -> List[Prompt]:
    """Every line of a JSONL prompts file; the first bad line stops with its file:line and the fix."""
    if not path.is_file():
        raise FtlabError(f"input={path}: no such file; give a JSONL file with one prompt per line")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise FtlabError(
                f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON value: {SHAPES}"
            ) from None
        out.append(from_row(row, where, columns, system, to_conversation))
    if not out:
        raise FtlabError(f"input={path} holds no prompts; write one JSON object per line: {SHAPES}")
    return out
