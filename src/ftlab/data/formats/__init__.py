"""Row formats: what a row of data holds and what it becomes, one module each.

  conversation.py  {conversations | messages: [{role, content}...]}, or ShareGPT's [{from, value}...]; tool calls
  qa.py            {question, answer, system?}
  instruction.py   {instruction, input?, output, system?}                   (Alpaca)
  preference.py    {prompt?, chosen, rejected}: pairs as text, messages or whole conversations
  kto.py           {prompt, completion, label}
  prompt.py        {prompt, reference?, ...}: prompts for online methods (GRPO), other columns for the rewards
  text.py          {text}: raw documents for continued pretraining

A format declares its columns (the data.columns.* keys it reads, with their defaults and docs), how its rows are
recognised (data.format=auto tries the formats by `priority`), what a row becomes (`parse`: checked messages, a
pair, a document ...), that result's tokens as an example of its `kind` (data/kinds/), the reference answer
evaluation scores, and how a line of an inference prompts file is read. Each check names the row, the column and
the fix. The schema's data.format choices and data.columns section, the methods' data checks, the prompts-file
shapes and the preprocessing cache key are all read from here.

    @FORMATS.register
    class MyFormat(Format): name = "mine"; kind = "tokens"; ...
"""

import dataclasses
import difflib
from typing import List, Optional

from ftlab.utils.errors import ConfigError, FtlabError
from ftlab.utils.options import docs
from ftlab.utils.registry import Registry

FORMATS = Registry("data format", __name__)


class Format:
    name: str
    kind: str = "tokens"
    """The kind of example its rows become (data/kinds/): tokens, pair, judged, prompt."""
    needs: str
    """What its rows hold, as a method's data check says it: "chat rows (qa ...)"; see also `wants`."""
    priority: int = 50
    """data.format=auto tries the formats from the lowest priority up; the first whose columns a row has wins."""
    Columns: Optional[type] = None
    """A dataclass of the data.columns keys it reads: a field per key, its default the column name, its doc under it."""
    no_answers: str = ""
    """Why evaluation cannot score this format (it has no answers); "" when it can."""

    def wants(self, columns) -> str:
        """The columns detection looks for, with `columns` (data.columns) names: "qa needs question+answer"."""
        raise NotImplementedError

    def detect(self, row: dict, columns) -> bool:
        """Whether `row` (its keys) is in this format, with the column names of `columns` (data.columns)."""
        raise NotImplementedError

    def parse(self, row: dict, where: str, data):
        """The checked row as what tokenize takes (messages, a pair ...); FtlabError naming the row, column and fix.
        `data`: the data options (columns, system_prompt ...)."""
        raise NotImplementedError

    def tokenize(self, tokenizer, parsed, data, where: str):
        """parse's result as an example of `kind`, None when truncation leaves nothing to learn (dropped), or a list
        of examples (the blocks of a long document)."""
        raise NotImplementedError

    def reference(self, parsed, where: str) -> Optional[List[dict]]:
        """Messages whose last assistant turn is the reference answer evaluation scores; None: the row has none to
        score against (a KTO row's undesirable completion). Only called where `no_answers` is ""."""
        return parsed

    def prompt(self, row: dict, where: str, columns) -> Optional[List[dict]]:
        """A line of an inference prompts file in this format as messages (a last assistant turn is the reference,
        which the line may leave out); None when the line is not in this format."""
        if not self.detect(row, columns):
            return None
        return self.reference(self.parse(row, where, PromptLine(columns)), where)


class PromptLine:
    """The data options `parse` reads, for a prompts-file line: the run's columns, and no system prompt of the data
    (infer's system= adds one)."""

    def __init__(self, columns):
        self.columns, self.system_prompt = columns, None


def detect(row: dict, columns, where: str):
    """The format whose columns `row` has, trying them by priority; ConfigError naming what each needs."""
    ordered = sorted(FORMATS, key=lambda f: f.priority)
    found = next((f for f in ordered if f.detect(row, columns)), None)
    if found is not None:
        return found
    keys = ", ".join(map(str, row)) or "none"
    wanted = "; ".join(f.wants(columns) for f in ordered)
    raise ConfigError(
        f"{where}: data.format=auto found no known format in the columns ({keys}); {wanted}. Map yours, e.g. "
        "data.columns.question=prompt data.columns.answer=completion, or set data.format"
    )


def of_kind(kind: str) -> list:
    """The formats whose rows become examples of `kind`: what a method training on that kind reads."""
    return [f for f in sorted(FORMATS, key=lambda f: f.priority) if f.kind == kind]


def columns_schema() -> type:
    """The data.columns section: every format's columns in one dataclass, each key's doc saying which formats read
    it. A key two formats declare must agree on its type and default (qa and instruction share `system`). The same
    class until a format is registered."""
    FORMATS.names()  # the formats found first: finding them registers them, which is what the cache counts
    if FORMATS.version not in _COLUMNS:
        _COLUMNS.clear()
        _COLUMNS[FORMATS.version] = _columns()
    return _COLUMNS[FORMATS.version]


_COLUMNS: dict = {}


def _columns() -> type:
    fields, readers = {}, {}
    for fmt in sorted(FORMATS, key=lambda f: f.priority):
        if fmt.Columns is None:
            continue
        own = docs(fmt.Columns)
        for f in dataclasses.fields(fmt.Columns):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.name in fields and (fields[f.name][0], fields[f.name][1]) != (f.type, default):
                raise ConfigError(
                    f"data.columns.{f.name}: format {fmt.name} declares it as {f.type} = {default!r}, another format "
                    f"as {fields[f.name][0]} = {fields[f.name][1]!r}; a shared column must agree"
                )
            fields.setdefault(f.name, (f.type, default, own.get(f.name, "")))
            readers.setdefault(f.name, []).append(fmt.name)
    return dataclasses.make_dataclass(
        "ColumnsOptions",
        [
            (name, kind, dataclasses.field(default=default, metadata={"doc": f"{', '.join(readers[name])}: {doc}"}))
            for name, (kind, default, doc) in fields.items()
        ],
    )


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


def with_system(messages: List[dict], system_prompt: Optional[str]) -> List[dict]:
    """data.system_prompt as the first turn of messages that bring no system turn of their own."""
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}] + messages
    return messages
