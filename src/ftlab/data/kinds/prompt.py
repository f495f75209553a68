"""A prompt to answer, for online methods that generate their own answers and score them (GRPO):

  {input_ids, labels, row}

input_ids: the prompt as the chat template renders it, generation prompt added (the tokens inference sees);
labels: all IGNORE (nothing in a prompt is learnt); row: JSON of what the reward functions read: the prompt as
the data gave it (text, or messages), the reference answer where there is one, every other column of the row, and
where the row came from (which seeds its samples).

A batch of B prompts is left-padded (generation continues at the right edge), with each prompt's row.

Any chat data with answers is read as prompts too (`adopts`): a conversation's last assistant turn becomes the
reference and the turns before it the prompt, so every chat dataset trains an online method.
"""

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from ftlab.data import chat
from ftlab.data.chat import IGNORE
from ftlab.data.kinds import KINDS, Kind
from ftlab.utils.errors import FtlabError


@dataclass
class PromptRow:
    """A row as an online method reads it: what parse makes, and what its reward functions are given."""

    messages: List[dict]
    """The conversation to answer, ending with a user turn (a text prompt as one user turn), system prompt included."""
    prompt: Union[str, List[dict]]
    """The prompt as the data gave it: text (then completions reach the reward functions as text), or messages
    (then as [{"role": "assistant", "content": ...}], TRL's conversational shape)."""
    reference: Optional[str] = None
    """The expected answer, where the row has one."""
    columns: Dict[str, Any] = field(default_factory=dict)
    """The row's other columns, passed to the reward functions by name."""


def encode_row(parsed: PromptRow, where: str) -> str:
    return json.dumps(
        {"prompt": parsed.prompt, "reference": parsed.reference, "columns": parsed.columns, "where": where},
        ensure_ascii=False,
        default=str,
    )


def decode_row(text: str) -> dict:
    """{prompt, reference, columns, where} of an example's row; {} for a filler."""
    return json.loads(text) if text else {}


def tokenize(tokenizer, parsed: PromptRow, max_seq_len: int, where: str) -> Optional[dict]:
    """The prompt's tokens (as inference renders them) and its row; None when the prompt alone fills max_seq_len."""
    _, ids = chat.prompt_ids(tokenizer, parsed.messages, where, "assistant")
    if len(ids) >= max_seq_len:
        return None
    return {"input_ids": ids, "labels": [IGNORE] * len(ids), "row": encode_row(parsed, where)}


def from_messages(messages: List[dict], where: str) -> PromptRow:
    """A conversation's last assistant turn as the reference, the turns before it as the prompt."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise FtlabError(f"{where}: the conversation has no assistant turn to take as the reference")
    prompt, reference = messages[:last], messages[last].get("content")
    if not prompt or prompt[-1]["role"] not in ("user", "tool"):
        raise FtlabError(f"{where}: the turns before the last answer must end with a user turn; there is no prompt")
    tools = chat.tools_of(messages)
    columns = {"tools": tools} if tools else {}
    return PromptRow(prompt, list(prompt), reference if isinstance(reference, str) else None, columns)


@KINDS.register
class Prompts(Kind):
    name = "prompt"

    def supervised(self, item: dict) -> int:
        return 0  # the answers are generated during training; a prompt has none

    def adopts(self, fmt) -> bool:
        """Chat data with answers (conversation, qa, instruction) is read as prompts with a reference."""
        return fmt.kind == "tokens" and not fmt.no_answers

    def adopt(self, tokenizer, parsed, max_seq_len: int, where: str) -> Optional[dict]:
        """A chat format's messages as a prompt example (`adopts`)."""
        return tokenize(tokenizer, from_messages(parsed, where), max_seq_len, where)

    def collate(self, items: List[dict], pad_id: int) -> dict:
        import torch  # here: the prompt format imports this module, and listing the formats must not load torch

        width = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, x in enumerate(items):  # left padding: every prompt ends where generation goes on
            n = len(x["input_ids"])
            ids[i, width - n :] = torch.tensor(x["input_ids"])
            mask[i, width - n :] = 1
        return {"input_ids": ids, "attention_mask": mask, "rows": [decode_row(x["row"]) for x in items]}

    def filler(self, like: dict, pad_id: int) -> dict:
        """One pad token and no row: the rank runs a forward pass that adds nothing (DDP needs every rank's)."""
        return {"input_ids": [pad_id], "labels": [IGNORE], "row": ""}

    def show(self, tokenizer, item: dict, index, color: bool) -> str:
        row = decode_row(item["row"])
        extra = ", ".join(sorted(row.get("columns", {}))) or "none"
        lines = [
            f"\n── prompt {index}: {len(item['input_ids'])} tokens; reference: "
            f"{'yes' if row.get('reference') is not None else 'none'}; columns for the rewards: {extra} ──",
            tokenizer.decode(item["input_ids"]),
        ]
        if row.get("reference") is not None:
            lines.append(f"── reference: {row['reference']}")
        return "\n".join(lines)
