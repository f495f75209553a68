"""Rows in any of the supported formats to one shape: a checked list of {role, content} messages.

  qa            {question, answer, system?}
  instruction   {instruction, input?, output, system?}           (Alpaca)
  conversation  {conversations | messages: [{role, content}...]}  or ShareGPT's [{from, value}...]

Column names come from data.columns, so `data.columns.question=prompt` reads a `prompt` column. Every check
names the row, the column and the fix; nothing that would train on garbage (an empty answer, a number where
text belongs, an unknown role) passes silently.
"""

import difflib
import json
from typing import List, Optional

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


TOOL_SHAPE = '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", ...}}}'
CALL_SHAPE = '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}'


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
    tools = _tool_definitions(row.get(tools_column), where, tools_column) if tools_column else None
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
            messages.append({"role": role, "content": _turn_text(content, at, content_key)})
            continue
        for key, owner in (("tool_calls", "assistant"), ("weight", "assistant"), ("tool_call_id", "tool")):
            if turn.get(key) not in (None, []) and role != owner:
                raise FtlabError(f"{at}: '{key}' belongs on {owner} turns only, not on a {role} turn; remove it")
        if role == "assistant":
            messages.append(_assistant_turn(turn, at, tools))
        elif role == "tool":
            messages.append(_tool_turn(turn, at, messages))
        else:
            messages.append({"role": role, "content": _turn_text(content, at, content_key)})
    return messages


def _turn_text(content, at: str, key: str = "content") -> str:
    if not isinstance(content, str):
        raise FtlabError(f"{at}: '{key}' must be text, got {type(content).__name__} ({str(content)[:40]})")
    if not content.strip():
        raise FtlabError(f"{at}: '{key}' is an empty string; fill it in or drop the turn")
    return content


def _json_value(value, at: str, what: str, fix: str):
    """`value`, or the value of a JSON string (tools and calls often come JSON-encoded, in CSV or Parquet)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise FtlabError(f"{at}: {what} is not valid JSON ({e}); {fix}") from None


def _tool_definitions(value, where: str, column: str) -> Optional[list]:
    """The row's tool definitions in OpenAI's shape, [{"type": "function", "function": {name, description?,
    parameters?}}]; a bare {name, parameters} function is wrapped. None: the row offers no tools."""
    fix = f"give a list of function definitions like {TOOL_SHAPE}"
    tools = _json_value(value, f"{where}: column '{column}'", "it", fix)
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise FtlabError(f"{where}: column '{column}' must be a list of tools, got {type(tools).__name__}; {fix}")
    out = []
    for k, tool in enumerate(tools):
        at = f"{where}: {column}[{k}]"
        if not isinstance(tool, dict):
            raise FtlabError(f"{at} must be an object, got {type(tool).__name__}; {fix}")
        if tool.get("type", "function") != "function":
            raise FtlabError(f'{at}: type {tool["type"]!r} is not a function tool; only "function" tools render')
        function = tool.get("function", tool)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise FtlabError(f"{at}: a tool needs a function name; {fix}")
        if not isinstance(function.get("parameters", {}), dict):
            raise FtlabError(f"{at}: 'parameters' of {function['name']} must be a JSON schema object; {fix}")
        function = {k: v for k, v in function.items() if k != "type"} if "function" not in tool else function
        out.append({"type": "function", "function": function})
    return out


def _assistant_turn(turn: dict, at: str, tools: Optional[list]) -> dict:
    """An assistant turn: text, tool calls, or both; tool call arguments become JSON objects, the shape every
    template renders (Llama 3.1's tojson would quote a JSON string again)."""
    content, calls, weight = turn.get("content"), turn.get("tool_calls") or None, turn.get("weight")
    if calls is None and content is None:
        raise FtlabError(
            f"{at}: an assistant turn needs 'content' (its text) or 'tool_calls' (the calls it makes); it has neither"
        )
    if calls is None:
        content = _turn_text(content, at)
    elif content is None:  # a turn that only calls: "" renders in every template, where null may print "None"
        content = ""
    elif not isinstance(content, str):
        raise FtlabError(f"{at}: 'content' must be text, got {type(content).__name__} ({str(content)[:40]})")
    message = {"role": "assistant", "content": content}
    if calls is not None:
        message["tool_calls"] = _tool_calls(calls, at, tools)
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
            raise FtlabError(
                f"{at}: 'weight' must be 0 (context, not learnt) or 1 (learnt), got {weight!r}; fix or remove it"
            )
        message["weight"] = int(weight)
    return message


def _tool_calls(calls, at: str, tools: Optional[list]) -> list:
    shape = f"[{CALL_SHAPE}]"
    calls = _json_value(calls, at, "'tool_calls'", f"give a list like {shape}")
    if not isinstance(calls, list) or not calls:
        raise FtlabError(f"{at}: 'tool_calls' must be a non-empty list like {shape}, got {str(calls)[:40]}")
    offered = [t["function"]["name"] for t in tools or []]
    out = []
    for k, call in enumerate(calls):
        here = f"{at}.tool_calls[{k}]"
        if not isinstance(call, dict):
            raise FtlabError(f"{here} must be an object like {CALL_SHAPE}, got {type(call).__name__}")
        if call.get("type", "function") != "function":
            raise FtlabError(f'{here}: type {call["type"]!r} is not a function call; use "function"')
        function = call.get("function", call)  # also the bare {name, arguments} some datasets write
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise FtlabError(f"{here}: no function name; write the call as {CALL_SHAPE}")
        if offered and name not in offered:
            raise FtlabError(
                f"{here}: calls {name}, which the row's tools do not define (tools: {', '.join(offered)}); "
                "fix the name or add its definition"
            )
        arguments = function.get("arguments", {})
        arguments = _json_value(arguments, here, f"the arguments of {name}", "write them as a JSON object")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise FtlabError(
                f"{here}: the arguments of {name} must be a JSON object, got {type(arguments).__name__} "
                f"({str(arguments)[:40]})"
            )
        normal = {"type": "function", "function": {"name": name, "arguments": arguments}}
        if call.get("id") is not None:
            normal["id"] = str(call["id"])
        out.append(normal)
    return out


def _tool_turn(turn: dict, at: str, before: list) -> dict:
    """A tool result; it must follow the assistant turn whose call it answers (or another result of it)."""
    content = turn.get("content")
    if content is None:
        raise FtlabError(f"{at}: a tool turn needs 'content', the result the tool returned; fill it in or drop it")
    if isinstance(content, (dict, list)):  # a structured result: its JSON text, as templates print text
        content = json.dumps(content, ensure_ascii=False)
    message = {"role": "tool", "content": _turn_text(content, at)}
    previous = next((m for m in reversed(before) if m["role"] != "tool"), None)
    if previous is None or not previous.get("tool_calls"):
        raise FtlabError(
            f"{at}: a tool result must follow the assistant turn with the tool_calls it answers; reorder the turns"
        )
    calls = previous["tool_calls"]
    call_id, name = turn.get("tool_call_id"), turn.get("name")
    for key, value in (("tool_call_id", call_id), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise FtlabError(f"{at}: '{key}' must be text, got {type(value).__name__} ({str(value)[:40]})")
    if call_id is not None:
        ids = [c["id"] for c in calls if "id" in c]
        if ids and call_id not in ids:
            raise FtlabError(
                f"{at}: tool_call_id {call_id!r} answers none of the calls before it (ids: {', '.join(ids)})"
            )
        message["tool_call_id"] = call_id
        if name is None:  # templates that print the tool's name find it on the call
            name = next((c["function"]["name"] for c in calls if c.get("id") == call_id), None)
    if name is not None:
        message["name"] = name
    return message
