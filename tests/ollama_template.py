"""A renderer for the part of Go's text/template that ftlab's Ollama TEMPLATEs use, fed the values Ollama feeds them.

The subset: text; actions `{{ ... }}`, `{{- ` and ` -}}` trimming the white space beside them; if / else if / else /
end; range $i, $x := PIPE, range $x := PIPE and range PIPE, each to end; $x := and $x = (they print nothing); fields
of the dot, of $ and of variables; "strings" without escapes, integers, true, false; (parentheses); the functions eq,
ne, and, or, not, len and slice. Anything else raises, as do an unknown field or variable, a comparison of unlike
types and printing anything but a string: a TEMPLATE that renders here uses nothing Go would read otherwise.
"""

import re
from typing import Any, Dict, List

_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.S)
_TOKEN = re.compile(
    r'\s*(?:(?P<str>"[^"\\]*")|(?P<num>-?\d+)|(?P<var>\$\w*(?:\.[A-Za-z_]\w*)*)|(?P<field>(?:\.[A-Za-z_]\w*)+|\.)'
    r"|(?P<word>[A-Za-z_]\w*)|(?P<op>:=|=|,|\(|\)))"
)
_SPACE = " \t\r\n"  # what Go's trim markers remove
_END, _ELSE, _IF = ("word", "end"), ("word", "else"), ("word", "if")


def values(messages: List[Dict[str, str]]) -> Dict[str, Any]:
    """What Ollama's Template.Execute passes a TEMPLATE that reads .Messages (its template/template.go, collate):
    every message, system ones included, consecutive ones of a role (tool excepted) merged with a blank line between
    their contents; System: the contents of the system messages, joined by a blank line."""
    merged: List[Dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["Role"] == m["role"] and m["role"] != "tool":
            merged[-1]["Content"] += "\n\n" + m["content"]
        else:
            merged.append({"Role": m["role"], "Content": m["content"]})
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"System": system, "Messages": merged, "Tools": None, "Response": "", "Think": False}


def render(template: str, messages: List[Dict[str, str]]) -> str:
    """The prompt Ollama builds from `template` for `messages`, before its tokenizer adds the BOS token."""
    if not re.search(r"\.Messages\b", template):  # Ollama renders a template without .Messages the legacy way
        raise ValueError("the template does not read .Messages")
    parts = _ACTION.split(template)  # text, left trim, action, right trim, text ...
    texts = parts[::4]
    for k, (left, right) in enumerate(zip(parts[1::4], parts[3::4])):  # action k sits between texts k and k + 1
        texts[k] = texts[k].rstrip(_SPACE) if left else texts[k]
        texts[k + 1] = texts[k + 1].lstrip(_SPACE) if right else texts[k + 1]
    if any("{{" in text or "}}" in text for text in texts):
        raise ValueError("an action this renderer cannot read")
    items = [("text", texts[0])]
    for action, text in zip(parts[2::4], texts[1:]):
        items += [("act", _tokens(action)), ("text", text)]
    nodes, at = _parse_list(items, 0)
    if at != len(items):
        raise ValueError("else or end without if or range")
    out: List[str] = []
    root = values(messages)
    _run(nodes, root, [{"$": root}], out)
    return "".join(out)


def _tokens(source: str) -> list:
    tokens, at = [], 0
    while source[at:].strip(_SPACE):
        m = _TOKEN.match(source, at)
        if not m:
            raise ValueError(f"cannot read {source[at:]!r}")
        tokens.append((m.lastgroup, m.group(m.lastgroup)))
        at = m.end()
    if not tokens:
        raise ValueError("an empty action")
    return tokens


def _parse_list(items: list, at: int) -> tuple:
    """The nodes from items[at] up to an else or end action, or to the end: (nodes, where it stopped)."""
    nodes: list = []
    while at < len(items):
        kind, value = items[at]
        if kind == "text":
            nodes += [("text", value)] if value else []
            at += 1
        elif value[0] in (_ELSE, _END):
            break
        elif value[0] == _IF:
            node, at = _parse_if(items, at, value[1:])
            nodes.append(node)
        elif value[0] == ("word", "range"):
            node, at = _parse_range(items, at, value[1:])
            nodes.append(node)
        else:
            nodes.append(("action", _pipeline(value)))
            at += 1
    return nodes, at


def _closing(items: list, at: int) -> list:
    if at >= len(items):
        raise ValueError("if or range without end")
    return items[at][1]


def _parse_if(items: list, at: int, condition: list) -> tuple:
    """An if (or the if of an `else if`, which shares its end with the if before it): (node, after its end)."""
    if _pipeline(condition)[0]:
        raise ValueError("a variable declared in an if")
    body, at = _parse_list(items, at + 1)
    closing = _closing(items, at)
    if closing == [_END]:
        return ("if", _pipeline(condition), body, []), at + 1
    if closing == [_ELSE]:
        other, at = _parse_list(items, at + 1)
        if _closing(items, at) != [_END]:
            raise ValueError("a second else")
        return ("if", _pipeline(condition), body, other), at + 1
    if closing[:2] == [_ELSE, _IF]:
        nested, at = _parse_if(items, at, closing[2:])
        return ("if", _pipeline(condition), body, [nested]), at
    raise ValueError(f"cannot read {closing}")


def _parse_range(items: list, at: int, tokens: list) -> tuple:
    names = []
    if len(tokens) > 4 and tokens[0][0] == tokens[2][0] == "var" and tokens[1:4:2] == [("op", ","), ("op", ":=")]:
        names, tokens = [tokens[0][1], tokens[2][1]], tokens[4:]
    elif len(tokens) > 2 and tokens[0][0] == "var" and tokens[1] == ("op", ":="):
        names, tokens = [tokens[0][1]], tokens[2:]
    if any("." in name for name in names):
        raise ValueError(f"cannot declare {names}")
    body, at = _parse_list(items, at + 1)
    if _closing(items, at) != [_END]:
        raise ValueError("range with else")
    return ("range", _pipeline(tokens), body, names), at + 1


def _pipeline(tokens: list) -> tuple:
    """(':=' or '=' or None, the variable or None, the command)."""
    if (
        len(tokens) > 2
        and tokens[0][0] == "var"
        and "." not in tokens[0][1]
        and tokens[1] in (("op", ":="), ("op", "="))
    ):
        return (tokens[1][1], tokens[0][1], _command(tokens[2:]))
    return (None, None, _command(tokens))


def _command(tokens: list) -> tuple:
    args, at = [], 0
    while at < len(tokens):
        kind, value = tokens[at]
        if (kind, value) == ("op", "("):
            depth, end = 1, at + 1
            while depth:
                if end == len(tokens):
                    raise ValueError("( without )")
                depth += {("op", "("): 1, ("op", ")"): -1}.get(tokens[end], 0)
                end += 1
            args.append(_command(tokens[at + 1 : end - 1]))
            at = end
            continue
        if kind == "str":
            args.append(("lit", value[1:-1]))
        elif kind == "num":
            args.append(("lit", int(value)))
        elif kind == "word" and value in ("true", "false"):
            args.append(("lit", value == "true"))
        elif kind == "word" and value in _FUNCS and at == 0:
            args.append(("fn", value))
        elif kind in ("var", "field"):
            args.append((kind, value))
        else:
            raise ValueError(f"cannot read {value!r} here")
        at += 1
    if args and args[0][0] == "fn":
        return ("call", args[0][1], args[1:])
    if len(args) != 1:
        raise ValueError("arguments to something that is not a function")
    return args[0]


def _truth(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, str, list, dict)):
        return bool(v)
    raise ValueError(f"no truth value for {v!r}")


def _eq(a: Any, b: Any) -> bool:
    if type(a) is not type(b) or not isinstance(a, (str, int, bool)):
        raise ValueError(f"incompatible types for comparison: {a!r}, {b!r}")
    return a == b


def _len(x: Any) -> int:
    if not isinstance(x, (str, list, dict)):
        raise ValueError(f"len of {x!r}")
    return len(x)


def _slice(x: Any, start: int) -> Any:
    if not isinstance(x, (list, str)) or not isinstance(start, int) or not 0 <= start <= len(x):
        raise ValueError(f"slice {start} of {x!r}")
    return x[start:]


_FUNCS = {"eq": _eq, "ne": lambda a, b: not _eq(a, b), "not": lambda a: not _truth(a), "len": _len, "slice": _slice}
_FUNCS.update({"and": None, "or": None})  # evaluated lazily, as Go does: the first false (true) argument, or the last


def _lookup(scopes: list, name: str) -> dict:
    """The scope that declared variable `name`."""
    for scope in reversed(scopes):
        if name in scope:
            return scope
    raise ValueError(f"undefined variable {name}")


def _eval(node: tuple, dot: Any, scopes: list) -> Any:
    if node[0] == "lit":
        return node[1]
    if node[0] == "call" and node[1] in ("and", "or"):
        value = None
        for arg in node[2]:
            value = _eval(arg, dot, scopes)
            if _truth(value) == (node[1] == "or"):
                break
        return value
    if node[0] == "call":
        return _FUNCS[node[1]](*(_eval(arg, dot, scopes) for arg in node[2]))
    if node[0] == "field":
        value, path = dot, [] if node[1] == "." else node[1].split(".")[1:]
    else:
        name, *path = node[1].split(".")
        value = _lookup(scopes, name)[name]
    for field in path:
        if not isinstance(value, dict) or field not in value:
            raise ValueError(f"no field {field} in {value!r}")
        value = value[field]
    return value


def _run(nodes: list, dot: Any, scopes: list, out: List[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "action":
            how, name, command = node[1]
            value = _eval(command, dot, scopes)
            if how == ":=":
                scopes[-1][name] = value
            elif how == "=":
                _lookup(scopes, name)[name] = value
            elif isinstance(value, str):
                out.append(value)
            else:
                raise ValueError(f"printing {value!r}, not a string")
        elif node[0] == "if":  # Go scopes the variables declared inside an if (or a range's turn) to it
            scopes.append({})
            _run(node[2] if _truth(_eval(node[1][2], dot, scopes)) else node[3], dot, scopes, out)
            scopes.pop()
        else:
            items = _eval(node[1][2], dot, scopes)
            if node[1][0] or not isinstance(items, list):
                raise ValueError(f"range over {items!r}")
            for i, item in enumerate(items):
                scopes.append(dict(zip(node[3], [i, item] if len(node[3]) == 2 else [item])))
                _run(node[2], item, scopes, out)
                scopes.pop()
