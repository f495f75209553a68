"""Conversation rows: {conversations | messages: [{role, content}...]}, or ShareGPT's [{from, value}...].

Roles map to system/user/assistant (ShareGPT's human/gpt too) and tool; tool definitions, calls and results are
checked in data/tool_calls.py. An assistant turn may carry OpenAI's per-message weight (0: context, 1: learnt).
"""

from dataclasses import dataclass
from typing import List, Optional

from ftlab.data import chat, tool_calls
from ftlab.data.chat import Conversation
from ftlab.data.formats import FORMATS, Format, with_system
from ftlab.utils.errors import FtlabError

# ShareGPT speaks of human/gpt; everything else maps to the three roles chat templates know
ROLE_NAMES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
CONVERSATION_COLUMNS = ("conversations", "messages")


@dataclass
class Columns:
    messages: Optional[str] = None
    """the list of turns; null finds `conversations` or `messages`."""
    tools: str = "tools"
    """an optional per-row list of tool (function) definitions the assistant may call."""


@FORMATS.register
class ConversationFormat(Format):
    name = "conversation"
    needs = "chat rows"
    priority = 0
    Columns = Columns

    def wants(self, columns) -> str:
        return f"conversation needs {columns.messages or 'conversations or messages'}"

    def detect(self, row: dict, columns) -> bool:
        return conversation_column(row, columns) is not None

    def parse(self, row: dict, where: str, data) -> List[dict]:
        messages = turns(row, where, data.columns)
        if not any(m["role"] == "assistant" for m in messages):
            raise FtlabError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
        return with_system(messages, data.system_prompt)

    def tokenize(self, tokenizer, parsed, data, where: str):
        return chat.tokenize_conversation(tokenizer, parsed, data.max_seq_len, where, data.train_on)

    def prompt(self, row: dict, where: str, columns):
        return turns(row, where, columns) if self.detect(row, columns) else None


def conversation_column(keys, columns) -> Optional[str]:
    if columns.messages is not None:
        return columns.messages if columns.messages in keys else None
    return next((c for c in CONVERSATION_COLUMNS if c in keys), None)


def turns(row: dict, where: str, columns) -> List[dict]:
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
    given = row[column]
    if not isinstance(given, list) or not given:
        raise FtlabError(
            f"{where}: column '{column}' must be a non-empty list of turns, got "
            f"{type(given).__name__} ({str(given)[:40]})"
        )
    tools_column = getattr(columns, "tools", None)
    tools = tool_calls.tool_definitions(row.get(tools_column), where, tools_column) if tools_column else None
    messages = Conversation(tools=tools)
    for j, turn in enumerate(given):
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
