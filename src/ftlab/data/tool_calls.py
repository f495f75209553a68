"""OpenAI-style tool calling in conversation rows: the row's tool definitions and the turns that use them.

  tools        [{"type": "function", "function": {name, description?, parameters?}}]  or bare {name, parameters}
  assistant    {role, content?, tool_calls?: [{id?, type: "function", function: {name, arguments}}], weight?}
  tool         {role: "tool", content, tool_call_id?, name?}

Tools, calls and arguments may come as JSON strings (CSV, Parquet); they leave as objects. Checks: each tool is
a named function whose parameters, if any, are a schema object; each call is a named function the row's tools
define (when it gives any) with arguments that are a JSON object; an assistant turn has text, calls or both, and
a weight of 0 or 1 if any; a tool result follows the assistant turn with the calls it answers, and its
tool_call_id, if any, is one of theirs. Each error names the row, the turn and the fix. formats.conversation_turns
walks the turns and calls in here.
"""

import json
from typing import Optional

from ftlab.utils.errors import FtlabError

TOOL_SHAPE = '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", ...}}}'
CALL_SHAPE = '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}'


def turn_text(content, at: str, key: str = "content") -> str:
    """A turn's text, a non-empty string (formats.conversation_turns checks user and system turns with it too)."""
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


def tool_definitions(value, where: str, column: str) -> Optional[list]:
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


def assistant_turn(turn: dict, at: str, tools: Optional[list]) -> dict:
    """An assistant turn: text, tool calls, or both; tool call arguments become JSON objects, the shape every
    template renders (Llama 3.1's tojson would quote a JSON string again)."""
    content, calls, weight = turn.get("content"), turn.get("tool_calls") or None, turn.get("weight")
    if calls is None and content is None:
        raise FtlabError(
            f"{at}: an assistant turn needs 'content' (its text) or 'tool_calls' (the calls it makes); it has neither"
        )
    if calls is None:
        content = turn_text(content, at)
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


def tool_turn(turn: dict, at: str, before: list) -> dict:
    """A tool result; it must follow the assistant turn whose call it answers (or another result of it)."""
    content = turn.get("content")
    if content is None:
        raise FtlabError(f"{at}: a tool turn needs 'content', the result the tool returned; fill it in or drop it")
    if isinstance(content, (dict, list)):  # a structured result: its JSON text, as templates print text
        content = json.dumps(content, ensure_ascii=False)
    message = {"role": "tool", "content": turn_text(content, at)}
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
