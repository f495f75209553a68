"""Prompt rows for online methods (method=grpo): {prompt, reference?, ...any other columns}.

The prompt is text (one user turn) or a list of messages ending with a user turn. There is no answer to learn:
the method samples its own and scores them with reward functions, which receive every other column of the row
by name (a math answer, a JSON schema, test cases ...). The reference column, when a row has it, is the answer
evaluation scores against and the shipped exact-match reward compares with. Chat data with answers trains an
online method too: its last assistant turn is read as the reference (data/kinds/prompt.py).
"""

from dataclasses import dataclass

from ftlab.data.formats import FORMATS, Format, text_field, with_system
from ftlab.data.formats.conversation import turns
from ftlab.data.kinds import prompt as prompts
from ftlab.utils.errors import FtlabError


@dataclass
class Columns:
    prompt: str = "prompt"
    """the prompt, as text or a list of messages (optional with whole conversations)."""
    reference: str = "reference"
    """prompt rows: the expected answer, optional; evaluation and the exact-match reward compare with it."""


@FORMATS.register
class PromptFormat(Format):
    name = "prompt"
    kind = "prompt"
    needs = "prompts (a prompt column, or chat rows whose last answer is the reference)"
    priority = 45  # after the formats that also have a prompt column (preference, kto)
    Columns = Columns

    def wants(self, columns) -> str:
        return f"prompt needs {columns.prompt}"

    def detect(self, row: dict, columns) -> bool:
        # prompt + completion is supervised data for a chat format (data.columns.question=prompt ...), not prompts
        return columns.prompt in row and getattr(columns, "completion", "completion") not in row

    def parse(self, row: dict, where: str, data) -> prompts.PromptRow:
        c = data.columns
        given = row.get(c.prompt)
        if isinstance(given, list):
            messages = turns({"messages": given}, f"{where}: column '{c.prompt}'", _MESSAGES)
            if messages[-1]["role"] not in ("user", "tool"):
                raise FtlabError(
                    f"{where}: column '{c.prompt}' must end with a user turn (the model answers it), "
                    f"not a {messages[-1]['role']} turn"
                )
            prompt = list(messages)
        else:
            prompt = text_field(row, c.prompt, where, key="prompt")
            messages = [{"role": "user", "content": prompt}]
        reference = row.get(c.reference)
        if reference is not None and not isinstance(reference, str):
            reference = str(reference)  # a number (a math answer) compares as its text
        columns = {k: v for k, v in row.items() if k not in (c.prompt, c.reference)}
        return prompts.PromptRow(with_system(messages, data.system_prompt), prompt, reference or None, columns)

    def tokenize(self, tokenizer, parsed, data, where: str):
        return prompts.tokenize(tokenizer, parsed, data.max_seq_len, where)

    def reference(self, parsed, where: str):
        """The prompt and its reference answer as one conversation; None for a row without a reference."""
        if parsed.reference is None:
            return None
        return list(parsed.messages) + [{"role": "assistant", "content": parsed.reference}]

    def prompt(self, row: dict, where: str, columns):
        """None: a prompts-file line with a prompt column is inference's own shape (use/prompts.py: the text, and
        a system column of its own), read the same for every run."""
        return None


class _MESSAGES:
    """The column names conversation.turns reads, for a prompt column's messages."""

    messages = "messages"
    tools = None
