"""Question-and-answer rows: {question, answer, system?}, one user turn and the answer to learn."""

from dataclasses import dataclass
from typing import List

from ftlab.data import chat
from ftlab.data.formats import FORMATS, Format, text_field, with_system


@dataclass
class Columns:
    question: str = "question"
    """the user's question."""
    answer: str = "answer"
    """the answer to learn."""
    system: str = "system"
    """an optional per-row system prompt."""


@FORMATS.register
class QA(Format):
    name = "qa"
    needs = "chat rows"
    priority = 30
    Columns = Columns

    def wants(self, columns) -> str:
        return f"qa needs {columns.question}+{columns.answer}"

    def detect(self, row: dict, columns) -> bool:
        return columns.question in row and columns.answer in row

    def parse(self, row: dict, where: str, data) -> List[dict]:
        c = data.columns
        user = text_field(row, c.question, where, key="question")
        answer = text_field(row, c.answer, where, key="answer")
        return single_turn(row, where, c, user, answer, data.system_prompt)

    def tokenize(self, tokenizer, parsed, data, where: str):
        return chat.tokenize_conversation(tokenizer, parsed, data.max_seq_len, where, data.train_on)

    def prompt(self, row: dict, where: str, columns):
        """The answer is optional here: a line without one is a prompt with no reference."""
        if columns.question not in row:
            return None
        user = text_field(row, columns.question, where, key="question")
        answer = text_field(row, columns.answer, where, key="answer", optional=True)
        return single_turn(row, where, columns, user, answer, None)


def single_turn(row: dict, where: str, columns, user: str, answer, system_prompt) -> List[dict]:
    """[system?, user, assistant?]: the row's own system column first, else data.system_prompt."""
    system = text_field(row, columns.system, where, optional=True)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return with_system(messages, system_prompt)
