"""Rows in any of the supported formats to one shape: a checked list of {role, content} messages.

  qa            {question, answer, system?}
  instruction   {instruction, input?, output, system?}           (Alpaca)
  conversation  {conversations | messages: [{role, content}...]}  or ShareGPT's [{from, value}...]
                (tool definitions, tool calls and tool results are checked in tool_calls.py)

Column names come from data.columns, so `data.columns.question=prompt` reads a `prompt` column. Every check
names the row, the column and the fix; nothing that would train on garbage (an empty answer, a number where
text belongs, an unknown role) passes silently.
"""

import difflib
from typing import List, Optional

from ftlab.data import tool_calls
from ftlab.data.chat import Conversation
from ftlab.utils.errors import ConfigError, FtlabError

FORMATS = ("qa", "instruction", "conversation", "preference", "kto", "text")
# what each method trains on: SFT on chat rows or text, the pairwise methods on preference pairs, KTO on labelled
# single answers
METHOD_FORMATS = {
    "sft": ("qa", "instruction", "conversation", "text"),
    "dpo": ("preference",),
    "orpo": ("preference",),
    "simpo": ("preference",),
    "kto": ("kto",),
}
# ShareGPT speaks of human/gpt; everything else maps to the three roles chat templates know
ROLE_NAMES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
CONVERSATION_COLUMNS = ("conversations", "messages")
REQUIRED = {  # data.columns keys, in the order detect tries them
    "preference": ("chosen", "rejected"),
    "kto": ("completion", "label"),
    "qa": ("question", "answer"),
    "instruction": ("instruction", "output"),
    "text": ("text",),
}


def conversation_column(keys, columns) -> Optional[str]:
    if columns.messages is not None:
        return columns.messages if columns.messages in keys else None
    return next((c for c in CONVERSATION_COLUMNS if c in keys), None)


def detect(keys, columns, where: str) -> str:
    """The format whose columns `keys` (a row's keys) has: conversation, then those of REQUIRED in its order."""
    keys = list(keys)
    if conversation_column(keys, columns) is not None:
        return "conversation"
    for fmt, needed in REQUIRED.items():
        if all(getattr(columns, k) in keys for k in needed):
            return fmt
    found = ", ".join(map(str, keys)) or "none"
    wanted = "; ".join(
        f"{fmt} needs {'+'.join(getattr(columns, k) for k in needed)}" for fmt, needed in REQUIRED.items()
    )
    raise ConfigError(
        f"{where}: data.format=auto found no known format in the columns ({found}); {wanted}; conversation needs "
        f"{columns.messages or 'conversations or messages'}. Map yours, e.g. data.columns.question=prompt "
        "data.columns.answer=completion, or set data.format"
    )


def check_method(fmt: str, method: str) -> None:
    """Refuse data of a kind `method` cannot train on, naming the format it needs."""
    if fmt in METHOD_FORMATS[method]:
        return
    if method == "sft":
        needs = "chat rows (qa, instruction, conversation) or text"
    else:
        needs = {
            "preference": "preference pairs: prompt, chosen, rejected (or chosen/rejected whole conversations)",
            "kto": "kto rows: prompt, completion, label (true for a good answer, false for a bad one)",
        }[METHOD_FORMATS[method][0]]
    other = next(m for m, fmts in METHOD_FORMATS.items() if fmt in fmts)
    raise ConfigError(
        f"method={method} trains on {needs}, and this data is in the {fmt} format; map the columns with "
        f"data.columns.*, or train it with method={other}"
    )


def to_messages(row: dict, where: str, fmt: str, columns, system_prompt: Optional[str]) -> List[dict]:
    """One row to messages, or FtlabError naming the row, the column and the fix."""
    if fmt == "conversation":
        messages = conversation_turns(row, where, columns)
        if not any(m["role"] == "assistant" for m in messages):
            raise FtlabError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    else:
        system = text_field(row, columns.system, where, optional=True)
        if fmt == "qa":
            user = text_field(row, columns.question, where, key="question")
            answer = text_field(row, columns.answer, where, key="answer")
        else:
            user = text_field(row, columns.instruction, where, key="instruction")
            extra = text_field(row, columns.input, where, optional=True)
            user = f"{user}\n\n{extra}" if extra else user
            answer = text_field(row, columns.output, where, key="output")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def text_field(row: dict, column: str, where: str, key: str = "", optional: bool = False) -> Optional[str]:
    """The text in `column` (data.columns.<key>), or FtlabError naming the row, the column and the fix."""
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
    """The checked turns of a conversation row, roles mapped to system/user/assistant/tool: a chat.Conversation
    (a list of messages) that carries the row's tool definitions (data.columns.tools), if any. Messages keep the
    keys templates read: role and content, and tool_calls (assistant), tool_call_id and name (tool); an
    assistant turn's weight (0: context, 1: learnt) is kept when given."""
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
    tools_column = getattr(columns, "tools", None)
    tools = tool_calls.tool_definitions(row.get(tools_column), where, tools_column) if tools_column else None
    messages = Conversation(tools=tools)
    for j, turn in enumerate(turns):
        at = f"{where}: {column}[{j}]"
        if not isinstance(turn, dict):
            raise FtlabError(
                f'{at} must be an object like {{"role": "user", "content": "..."}}, got {type(turn).__name__}'
            )
        sharegpt = "from" in turn and "role" not in turn
        role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
        role = turn.get(role_key)
        roles = ROLE_NAMES if sharegpt else {**ROLE_NAMES, "tool": "tool"}  # tool results: OpenAI's shape only
        if role not in roles:
            raise FtlabError(f"{at}: unknown role {role!r}; use one of {', '.join(roles)}")
        role, content = roles[role], turn.get(content_key)
        if sharegpt:
            messages.append({"role": role, "content": tool_calls.turn_text(content, at, content_key)})
            continue
        for key, owner in (("tool_calls", "assistant"), ("weight", "assistant"), ("tool_call_id", "tool")):
            if turn.get(key) not in (None, []) and role != owner:
                raise FtlabError(f"{at}: '{key}' belongs on {owner} turns only, not on a {role} turn; remove it")
        if role == "assistant":
            messages.append(tool_calls.assistant_turn(turn, at, tools))
        elif role == "tool":
            messages.append(tool_calls.tool_turn(turn, at, messages))
        else:
            messages.append({"role": role, "content": tool_calls.turn_text(content, at, content_key)})
    return messages
