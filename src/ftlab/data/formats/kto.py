"""KTO rows: {prompt, completion, label}, one answer labelled desirable (true) or not (false), unpaired."""

from dataclasses import dataclass
from typing import List

from ftlab.data.formats import FORMATS, Format, PromptLine, with_system
from ftlab.data.formats.preference import answer_turns, scored
from ftlab.utils.errors import FtlabError


@dataclass
class Judged:
    """A KTO row: the prompt turns, one continuation, and whether it is desirable."""

    prompt: List[dict]
    completion: List[dict]
    desirable: bool


@dataclass
class Columns:
    prompt: str = "prompt"
    """the prompt, as text or a list of messages (optional with whole conversations)."""
    completion: str = "completion"
    """the answer, as text or assistant messages."""
    label: str = "label"
    """true if the completion is desirable, false if not."""


@FORMATS.register
class KTO(Format):
    name = "kto"
    kind = "judged"
    needs = "kto rows: prompt, completion, label (true for a good answer, false for a bad one)"
    priority = 20
    Columns = Columns

    def wants(self, columns) -> str:
        return f"kto needs {columns.completion}+{columns.label}"

    def detect(self, row: dict, columns) -> bool:
        return columns.completion in row and columns.label in row

    def parse(self, row: dict, where: str, data) -> Judged:
        c = data.columns
        prompt = answer_turns(row, c.prompt, where, "prompt", role="user")
        completion = answer_turns(row, c.completion, where, "completion")
        if not any(m["role"] == "assistant" for m in completion):
            raise FtlabError(f"{where}: '{c.completion}' has no assistant turn, so nothing is scored")
        return Judged(with_system(prompt, data.system_prompt), completion, _label(row, c.label, where))

    def tokenize(self, tokenizer, judged: Judged, data, where: str) -> dict:
        """input_ids/labels of the answer, `desirable` (1 or 0) and `prompt_len`: KTO pairs each prompt with another
        row's answer to estimate its reference point, so it needs to know where the answer starts."""
        example = scored(tokenizer, judged.prompt, judged.completion, data.max_seq_len, where, "completion")
        example["desirable"] = int(judged.desirable)
        return example

    def reference(self, judged: Judged, where: str):
        """A desirable completion is the reference; an undesirable one is no answer to score against."""
        return judged.prompt + judged.completion if judged.desirable else None

    def prompt(self, row: dict, where: str, columns):
        if not self.detect(row, columns):
            return None
        judged = self.parse(row, where, PromptLine(columns))
        return self.reference(judged, where) or judged.prompt  # an undesirable answer is no reference


def _label(row: dict, column: str, where: str) -> bool:
    value = row.get(column)
    if isinstance(value, str):  # CSV cells are text
        value = {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower(), value)
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    if column not in row:
        raise FtlabError(
            f"{where}: no column '{column}' (columns: {', '.join(map(str, row))}); map it with "
            "data.columns.label=<column>"
        )
    raise FtlabError(f"{where}: column '{column}' must be true or false (got {value!r})")


# ── tokenizing ─────────────────────────────────────────────────────────────────────────────────────────────
