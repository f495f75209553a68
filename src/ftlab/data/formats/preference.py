"""Preference pairs (DPO, ORPO, SimPO): a prompt with a chosen and a rejected answer. The row shapes (column names
from data.columns):
  plain           {prompt: "...", chosen: "...", rejected: "..."}
  conversational  {prompt: [messages], chosen: [assistant messages], rejected: [assistant messages]}
  whole           {chosen: [messages], rejected: [messages]}: the turns both share are the prompt (UltraFeedback-
                  binarized; a prompt column holding the same turns is allowed); Anthropic-HH's strings
                  "\\n\\nHuman: ...\\n\\nAssistant: ..." are read as such conversations

An answer's scored tokens are exactly those SFT would learn for its assistant turns (chat.py's turn-by-turn
rendering, with the end-of-turn marker); the prompt's tokens, including assistant turns inside it, are context.
"""

from dataclasses import dataclass
from types import SimpleNamespace
from typing import List

from ftlab.data import chat
from ftlab.data.chat import IGNORE
from ftlab.data.formats import FORMATS, Format, text_field, with_system
from ftlab.data.formats.conversation import turns as conversation_turns
from ftlab.utils.errors import FtlabError

HH_TURN = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}


@dataclass
class Pair:
    """A preference row: the prompt turns, then the chosen and the rejected continuation."""

    prompt: List[dict]
    chosen: List[dict]
    rejected: List[dict]


@dataclass
class Columns:
    prompt: str = "prompt"
    """the prompt, as text or a list of messages (optional with whole conversations)."""
    chosen: str = "chosen"
    """the preferred answer (text or assistant messages), or the whole preferred conversation."""
    rejected: str = "rejected"
    """the dispreferred answer, or the whole dispreferred conversation."""


@FORMATS.register
class Preference(Format):
    name = "preference"
    kind = "pair"
    needs = "preference pairs: prompt, chosen, rejected (or chosen/rejected whole conversations)"
    priority = 10
    Columns = Columns

    def wants(self, columns) -> str:
        return f"preference needs {columns.chosen}+{columns.rejected}"

    def detect(self, row: dict, columns) -> bool:
        return columns.chosen in row and columns.rejected in row

    def parse(self, row: dict, where: str, data) -> Pair:
        columns = data.columns
        chosen = answer_turns(row, columns.chosen, where, "chosen")
        rejected = answer_turns(row, columns.rejected, where, "rejected")
        prompt = answer_turns(row, columns.prompt, where, "prompt", role="user") if row.get(columns.prompt) else []
        if prompt and chosen[: len(prompt)] == prompt and rejected[: len(prompt)] == prompt:
            chosen, rejected = (
                chosen[len(prompt) :],
                rejected[len(prompt) :],
            )  # whole conversations with a prompt column
        if not prompt:
            shared = _shared_prompt(chosen, rejected)
            if not shared:
                raise FtlabError(
                    f"{where}: no '{columns.prompt}' column, and '{columns.chosen}' and '{columns.rejected}' share "
                    "no opening turns to take as the prompt; add the prompt, e.g. data.columns.prompt=<column>"
                )
            prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if chosen == rejected:
            raise FtlabError(f"{where}: '{columns.chosen}' and '{columns.rejected}' are the same; a pair must differ")
        for side, answer in ((columns.chosen, chosen), (columns.rejected, rejected)):
            if not any(m["role"] == "assistant" for m in answer):
                raise FtlabError(f"{where}: '{side}' has no assistant turn after the prompt, so nothing is scored")
        return Pair(with_system(prompt, data.system_prompt), chosen, rejected)

    def tokenize(self, tokenizer, pair: Pair, data, where: str) -> dict:
        """One example with both answers: input_ids/labels (chosen) and rejected_ids/rejected_labels."""
        chosen = scored(tokenizer, pair.prompt, pair.chosen, data.max_seq_len, where, "chosen")
        rejected = scored(tokenizer, pair.prompt, pair.rejected, data.max_seq_len, where, "rejected")
        return {
            "input_ids": chosen["input_ids"],
            "labels": chosen["labels"],
            "rejected_ids": rejected["input_ids"],
            "rejected_labels": rejected["labels"],
        }

    def reference(self, pair: Pair, where: str):
        return pair.prompt + pair.chosen  # the chosen answer is the reference


def answer_turns(row: dict, column: str, where: str, key: str, role: str = "assistant") -> List[dict]:
    """A column as checked messages: text becomes one `role` turn (or, with Anthropic-HH markers, the turns they
    mark); a list is checked as conversation turns are."""
    value = row.get(column)
    if value is None:
        text_field(row, column, where, key=key)  # raises: the column is missing or empty
    if isinstance(value, str):
        if not value.strip():
            raise FtlabError(f"{where}: column '{column}' is an empty string; fill it in or drop the row")
        return _hh_turns(value) or [{"role": role, "content": value}]
    if isinstance(value, list):
        return conversation_turns({column: value}, where, SimpleNamespace(messages=column))
    raise FtlabError(
        f"{where}: column '{column}' must be text or a list of messages, got {type(value).__name__} "
        f"({str(value)[:40]}); map the {key} with data.columns.{key}=<column>"
    )


def _hh_turns(text: str) -> List[dict]:
    """Anthropic-HH's "\\n\\nHuman: ...\\n\\nAssistant: ..." text as turns; [] for text without those markers."""
    if not text.startswith("\n\nHuman:") or "\n\nAssistant:" not in text:
        return []
    turns, rest = [], text
    while rest:
        marker = next(m for m in HH_TURN if rest.startswith(m))
        ends = [i for i in (rest.find(m, len(marker)) for m in HH_TURN) if i != -1]
        end = min(ends, default=len(rest))
        turns.append({"role": HH_TURN[marker], "content": rest[len(marker) : end].strip()})
        rest = rest[end:]
        if rest and not any(rest.startswith(m) for m in HH_TURN):
            return []
    return turns


def _shared_prompt(chosen: List[dict], rejected: List[dict]) -> int:
    """How many opening turns are the prompt: the shared ones, up to the last non-assistant turn among them."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":
        shared -= 1
    return shared


def scored(tokenizer, prompt: List[dict], answer: List[dict], max_len: int, where: str, side: str) -> dict:
    """input_ids and labels of prompt + answer, the answer's assistant turns scored, truncated to `max_len`; an
    answer truncation leaves nothing of is an error (the pair cannot be compared)."""
    example = chat.tokenize_conversation(tokenizer, prompt + answer, 10**9, where, "assistant")
    _, context = chat.prompt_ids(tokenizer, prompt, where, "assistant") if prompt else ("", [])
    n = len(context)
    if example["input_ids"][:n] != context:
        raise FtlabError(f"{where}: the chat template renders the prompt differently before the {side} answer")
    labels = [IGNORE] * n + example["labels"][n:]
    if all(label == IGNORE for label in labels[:max_len]):
        raise FtlabError(
            f"{where}: the prompt is {n} tokens, so data.max_seq_len={max_len} leaves nothing of the {side} answer "
            "to score; raise data.max_seq_len or shorten the prompt"
        )
    return {"input_ids": example["input_ids"][:max_len], "labels": labels[:max_len], "prompt_len": min(n, max_len)}
