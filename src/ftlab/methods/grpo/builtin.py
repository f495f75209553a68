"""The shipped rewards (method.rewards=[{fn: NAME, ...}]), each a TRL-style function: one float, or None where it
does not apply, per completion. Their options are the entry's other keys (`{fn: regex, pattern: "^\\\\d+$"}`).

  exact_match  1 when the answer equals the reference after normalisation, else 0; None without a reference
  regex        1 when the completion matches `pattern` (whole, or anywhere with full=false), else 0
  json_valid   1 when the completion is JSON (and, with `schema`, valid against that JSON schema), else 0
  tool_call    1 when the completion is a call of one of the row's tools with the arguments it requires and no
               others, else 0; None for a row without tools
  length       1 at `target` words (or characters), falling linearly to 0 at twice or none of it
"""

import json
import re
import string
from typing import Optional

ARTICLES = re.compile(r"\b(a|an|the)\b")
TOOL_TAGS = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def text_of(completion) -> str:
    """A completion's text: as given (text prompts), or the content of its assistant message (chat prompts)."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(c for c in text if c not in string.punctuation)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(completions, reference=None, pattern: Optional[str] = None, normalized: bool = True, **kwargs):
    """The answer against the row's reference (data.columns.reference). `pattern`: a regex whose first group is
    the answer inside the completion (e.g. "#### (.+)"; no match scores 0); `normalized`: compare after
    normalize(), else the exact stripped text."""
    references = reference if reference is not None else [None] * len(completions)
    out = []
    for completion, ref in zip(completions, references):
        if ref is None:
            out.append(None)
            continue
        answer = text_of(completion).strip()
        if pattern is not None:
            found = re.search(pattern, answer, re.DOTALL)
            if found is None:
                out.append(0.0)
                continue
            answer = (found.group(1) if found.groups() else found.group(0)).strip()
        same = normalize(answer) == normalize(str(ref)) if normalized else answer == str(ref).strip()
        out.append(1.0 if same else 0.0)
    return out


def regex(completions, pattern: str, full: bool = True, **kwargs):
    """1 when `pattern` matches the whole completion (full=true) or some part of it, else 0; `.` spans lines."""
    compiled = re.compile(pattern, re.DOTALL)
    match = compiled.fullmatch if full else compiled.search
    return [1.0 if match(text_of(c).strip()) else 0.0 for c in completions]


def json_valid(completions, schema: Optional[dict] = None, **kwargs):
    """1 when the completion (a ```json fence around it allowed) is JSON, and valid against `schema` when given
    (a JSON schema, checked with the jsonschema package), else 0."""
    validator = None
    if schema is not None:
        import jsonschema  # here: only a reward with a schema needs it

        schema = _plain(schema)
        validator = jsonschema.validators.validator_for(schema)(schema)
    out = []
    for c in completions:
        value = _json(text_of(c))
        ok = value is not _BAD and (validator is None or validator.is_valid(value))
        out.append(1.0 if ok else 0.0)
    return out


def tool_call(completions, tools=None, **kwargs):
    """1 when the completion is one call of a tool the row defines (data.columns.tools, OpenAI's shape): JSON
    {"name": ..., "arguments": {...}}, bare or inside <tool_call> tags, naming a defined function, with every
    required argument and none it does not declare; else 0. None for a row without tools."""
    rows = tools if tools is not None else [None] * len(completions)
    out = []
    for c, defined in zip(completions, rows):
        if not defined:
            out.append(None)
            continue
        text = text_of(c).strip()
        tagged = TOOL_TAGS.findall(text)
        call = _json(tagged[0] if len(tagged) == 1 else text)
        out.append(1.0 if _is_call(call, defined) else 0.0)
    return out


def length(completions, target: int, unit: str = "words", **kwargs):
    """1 - |n - target| / target, at least 0: n the completion's words (unit=words) or characters (unit=chars)."""
    if unit not in ("words", "chars"):
        raise ValueError(f"length: unit must be words or chars (got {unit!r})")
    out = []
    for c in completions:
        text = text_of(c)
        n = len(text.split()) if unit == "words" else len(text)
        out.append(max(0.0, 1.0 - abs(n - target) / target))
    return out


_BAD = object()
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _json(text: str):
    text = text.strip()
    fenced = FENCE.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except (json.JSONDecodeError, TypeError):
        return _BAD


def _plain(value):
    """A config node (OmegaConf) as plain dicts and lists."""
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _is_call(call, tools) -> bool:
    if isinstance(tools, str):
        tools = _json(tools)
    if not isinstance(call, dict) or not isinstance(tools, list):
        return False
    arguments = call.get("arguments", call.get("parameters"))
    if isinstance(arguments, str):
        arguments = _json(arguments)
    if not isinstance(call.get("name"), str) or not isinstance(arguments, dict):
        return False
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or function.get("name") != call["name"]:
            continue
        params = function.get("parameters") or {}
        declared = set((params.get("properties") or {}).keys())
        required = set(params.get("required") or [])
        return required <= set(arguments) and (not declared or set(arguments) <= declared)
    return False


SHIPPED = {f.__name__: f for f in (exact_match, regex, json_valid, tool_call, length)}
