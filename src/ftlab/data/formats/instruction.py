"""Instruction rows (Alpaca): {instruction, input?, output, system?}; the input, if any, follows the instruction in
the user turn."""

from dataclasses import dataclass
from typing import List

from ftlab.data import chat
from ftlab.data.formats import FORMATS, Format, text_field
from ftlab.data.formats.qa import single_turn


@dataclass
class Columns:
    instruction: str = "instruction"
    """the task."""
    input: str = "input"
    """optional input the task applies to, appended to the instruction."""
    output: str = "output"
    """the response to learn."""
    system: str = "system"
    """an optional per-row system prompt."""


@FORMATS.register
class Instruction(Format):
    name = "instruction"
    needs = "chat rows"
    priority = 40
    Columns = Columns

    def wants(self, columns) -> str:
        return f"instruction needs {columns.instruction}+{columns.output}"

    def detect(self, row: dict, columns) -> bool:
        return columns.instruction in row and columns.output in row

    def parse(self, row: dict, where: str, data) -> List[dict]:
        c = data.columns
        output = text_field(row, c.output, where, key="output")
        return single_turn(row, where, c, self._user(row, where, c), output, data.system_prompt)

    def tokenize(self, tokenizer, parsed, data, where: str):
        return chat.tokenize_conversation(tokenizer, parsed, data.max_seq_len, where, data.train_on)

    def prompt(self, row: dict, where: str, columns):
        """The output is optional here: a line without one is a prompt with no reference."""
        if columns.instruction not in row:
            return None
        output = text_field(row, columns.output, where, key="output", optional=True)
        return single_turn(row, where, columns, self._user(row, where, columns), output, None)

    def _user(self, row: dict, where: str, columns) -> str:
        user = text_field(row, columns.instruction, where, key="instruction")
        extra = text_field(row, columns.input, where, optional=True)
        return f"{user}\n\n{extra}" if extra else user
