"""Rows in any of the supported formats to one shape: a checked list of {role, content} messages.

  qa            {question, answer, system?}
  instruction   {instruction, input?, output, system?}           (Alpaca)
  conversation  {conversations | messages: [{role, content}...]}  or ShareGPT's [{from, value}...]

Column names come from data.columns, so `data.columns.question=prompt` reads a `prompt` column. Every check
names the row, the column and the fix; nothing that would train on garbage (an empty answer, a number where
text belongs, an unknown role) passes silently.
"""

import difflib
from typing import List, Optional

from ftlab.utils.errors import ConfigError, FtlabError

FORMATS = ("qa", "instruction", "conversation")
# ShareGPT speaks of human/gpt; everything else maps to the three roles chat templates know
ROLE_NAMES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
CONVERSATION_COLUMNS = ("conversations", "messages")
REQUIRED = {"qa": ("question", "answer"), "instruction": ("instruction", "output")}  # data.columns keys


def conversation_column(keys, columns) -> Optional[str]:
    if columns.messages is not None:
        return columns.messages if columns.messages in keys else None
    return next((c for c in CONVERSATION_COLUMNS if c in keys), None)


def detect(keys, columns, where: str) -> str:
    """The format whose columns `keys` (a row's keys) has: conversation, then qa, then instruction."""
    keys = list(keys)
    if conversation_column(keys, columns) is not None:
        return "conversation"
    for fmt in ("qa", "instruction"):
        if all(getattr(columns, k) in keys for k in REQUIRED[fmt]):
            return fmt
    found = ", ".join(map(str, keys)) or "none"
    raise ConfigError(
        f"{where}: data.format=auto found no known format in the columns ({found}); qa needs "
        f"{columns.question}+{columns.answer}, instruction needs {columns.instruction}+{columns.output}, "
        f"conversation needs {columns.messages or 'conversations or messages'}. Map yours, e.g. "
        "data.columns.question=prompt data.columns.answer=completion, or set data.format"
    )


def to_messages(row: dict, where: str, fmt: str, columns, system_prompt: Optional[str]) -> List[dict]:
    """One row to messages, or FtlabError naming the row, the column and the fix."""
    if fmt == "conversation":
        messages = conversation_turns(row, where, columns)
        if not any(m["role"] == "assistant" for m in messages):
            raise FtlabError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    else:
        system = _text(row, columns.system, where, optional=True)
        if fmt == "qa":
            user = _text(row, columns.question, where, key="question")
            answer = _text(row, columns.answer, where, key="answer")
        else:
            user = _text(row, columns.instruction, where, key="instruction")
            extra = _text(row, columns.input, where, optional=True)
            user = f"{user}\n\n{extra}" if extra else user
            answer = _text(row, columns.output, where, key="output")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _text(row: dict, column: str, where: str, key: str = "", optional: bool = False) -> Optional[str]:
    value = row.get(column)
    if value is None or (optional and value == ""):  # an absent optional value: "" in CSV, null in Parquet
        if optional:
            return None
        if column in row:
            raise FtlabError(f"{where}: column '{column}' is empty; every row needs a {key}")
        close = difflib.get_close_matches(column, [str(k) for k in row], n=1)
        fix = f"did you mean data.columns.{key}={close[0]}?" if close else f"map it with data.columns.{key}=<column>"
        raise FtlabError(f"{where}: no column '{column}' (columns: {', '.join(map(str, row))}); {fix}")
    if not isinstance(value, str):
        raise FtlabError(f"{where}: column '{column}' must be text, got {type(value).__name__} ({str(value)[:40]})")
    if not value.strip():
        raise FtlabError(f"{where}: column '{column}' is an empty string; fill it in or drop the row")
    return value


def conversation_turns(row: dict, where: str, columns) -> List[dict]:
    """The checked {role, content} turns of a conversation row (roles mapped to system/user/assistant)."""
    column = conversation_column(row, columns)
    if column is None:
        wanted = columns.messages or "conversations' or 'messages"
        raise FtlabError(
            f"{where}: no '{wanted}' column (columns: {', '.join(map(str, row))}); "
            "set data.columns.messages=<column> or data.format"
        )
    turns = row[column]
    if not isinstance(turns, list) or not turns:
        raise FtlabError(
            f"{where}: column '{column}' must be a non-empty list of turns, got "
            f"{type(turns).__name__} ({str(turns)[:40]})"
        )
    messages = []
    for j, turn in enumerate(turns):
        at = f"{where}: {column}[{j}]"
        if not isinstance(turn, dict):
            raise FtlabError(
                f'{at} must be an object like {{"role": "user", "content": "..."}}, got {type(turn).__name__}'
            )
        sharegpt = "from" in turn and "role" not in turn
        role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
        role = turn.get(role_key)
        if role not in ROLE_NAMES:
            raise FtlabError(f"{at}: unknown role {role!r}; use one of {', '.join(ROLE_NAMES)}")
        content = turn.get(content_key)
        if not isinstance(content, str):
            raise FtlabError(f"{at}: '{content_key}' must be text, got {type(content).__name__} ({str(content)[:40]})")
        if not content.strip():
            raise FtlabError(f"{at}: '{content_key}' is an empty string; fill it in or drop the turn")
        messages.append({"role": ROLE_NAMES[role], "content": content})
    return messages
