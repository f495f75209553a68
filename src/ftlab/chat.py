"""Conversations to training examples: chat template rendering and assistant-only labels.

The supervised part of each assistant turn is found by rendering the conversation incrementally with the
tokenizer's own template, not by searching for marker strings a template may spell or tokenise differently:
  prefix  = render(messages[:i], add_generation_prompt=True)   # everything before turn i's content
  through = render(messages[:i + 1])                           # ... plus the content and its end-of-turn
Turn i supervises the characters from len(prefix) to the end of the last special token in `through`
(the end-of-turn token: <|im_end|>, <|eot_id|>, </s> ...), so the model learns to stop, but not the
separator whitespace after it. Tokens whose characters start in a supervised span get labels; all
others get IGNORE.
"""
from typing import List, Optional

from ftlab.errors import FtlabError

IGNORE = -100  # the label value Hugging Face losses skip
ROLES = ("system", "user", "assistant")


def to_conversation(row: dict, where: str) -> List[dict]:
    """A row in the conversation format, checked: `{"conversations": [{"role", "content"}, ...]}`."""
    messages = row.get("conversations") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise FtlabError(f"{where}: expected a non-empty 'conversations' list of {{role, content}} "
                         f"(found: {keys})")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise FtlabError(f"{where}: conversations[{j}] must be {{\"role\": one of {'/'.join(ROLES)}, "
                             f"\"content\": text}} (got {str(m)[:80]})")
    if not any(m["role"] == "assistant" for m in messages):
        raise FtlabError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def supervised_spans(tokenizer, messages: List[dict], where: str) -> tuple:
    """The full rendered text and the (start, end) character spans of every assistant turn to learn."""
    full = _render(tokenizer, messages, False)
    specials = [s for s in tokenizer.all_special_tokens if s]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix, through = _render(tokenizer, messages[:i], True), _render(tokenizer, messages[:i + 1], False)
        if not (through.startswith(prefix) and full.startswith(through)):
            raise FtlabError(f"{where}: the chat template does not render turn {i} as a continuation of the "
                             "turns before it, so its assistant tokens cannot be located")
        turn = through[len(prefix):]
        ends = [turn.rfind(s) + len(s) for s in specials if s in turn]
        end = max(ends) if ends else len(turn.rstrip())  # a template without an end token: the text itself
        spans.append((len(prefix), len(prefix) + end))
    return full, spans


def tokenize_conversation(tokenizer, messages: List[dict], max_len: int, where: str) -> Optional[dict]:
    """input_ids and labels for one conversation, truncated to `max_len`; None when truncation removed
    every supervised token (the caller counts it as dropped: an all-masked example teaches nothing)."""
    full, spans = supervised_spans(tokenizer, messages, where)
    # the template already wrote BOS and friends into the text, so the tokenizer must not add them again
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = enc["input_ids"], []
    for token, (start, _end) in zip(ids, enc["offset_mapping"]):
        inside = any(s <= start < e for s, e in spans)
        labels.append(token if inside else IGNORE)
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}
