"""Conversations to training examples: chat template rendering and assistant-only labels.

The supervised part of each assistant turn is found by rendering the conversation incrementally with the
tokenizer's own template, not by searching for marker strings a template may spell or tokenise differently:
  prefix  = render(messages[:i], add_generation_prompt=True)   # everything before turn i's content
  through = render(messages[:i + 1])                           # ... plus the content and its end-of-turn
Turn i supervises the characters from len(prefix) to the end of the last special token in `through`
(the end-of-turn token: <|im_end|>, <|eot_id|>, </s> ...), so the model learns to stop, but not the
separator whitespace after it. Tokens whose characters start in a supervised span get labels; all
others get IGNORE. The rows themselves are checked before this, in formats.py.
"""

from typing import List, Optional

from jinja2 import TemplateError

from ftlab.utils.errors import FtlabError

IGNORE = -100  # the label value Hugging Face losses skip


def _render(tokenizer, messages, generation_prompt: bool, where: str) -> str:
    if not messages:
        return ""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError as e:  # templates raise on shapes they refuse (e.g. roles that do not alternate)
        raise FtlabError(
            f"{where}: the chat template refuses this conversation ({e}); fix the row or set data.chat_template"
        ) from None


def supervised_spans(tokenizer, messages: List[dict], where: str, train_on: str) -> tuple:
    """The full rendered text and the (start, end) character spans to learn: every assistant turn (with its
    end-of-turn marker), only the last one, or (train_on="all") the whole text."""
    full = _render(tokenizer, messages, False, where)
    if train_on == "all":
        return full, [(0, len(full))]
    specials = [s for s in tokenizer.all_special_tokens if s]
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True, where)
        through = _render(tokenizer, messages[: i + 1], False, where)
        if not (through.startswith(prefix) and full.startswith(through)):
            raise FtlabError(
                f"{where}: the chat template does not render turn {i} as a continuation of the "
                "turns before it, so its assistant tokens cannot be located; set data.chat_template"
            )
        turn = through[len(prefix) :]
        # the end-of-turn marker: the last special token in the turn; a template whose marker is not a special
        # token of this vocabulary (see templates.py) ends the turn where its trailing whitespace starts
        ends = [turn.rfind(s) + len(s) for s in specials if s in turn]
        end = max(ends) if ends else len(turn.rstrip())
        spans.append((len(prefix), len(prefix) + end))
    return full, spans[-1:] if train_on == "last_assistant" else spans


def tokenize_conversation(tokenizer, messages: List[dict], max_len: int, where: str, train_on: str) -> Optional[dict]:
    """input_ids and labels for one conversation, truncated to `max_len`; None when truncation removed
    every supervised token (the caller counts it as dropped: an all-masked example teaches nothing)."""
    full, spans = supervised_spans(tokenizer, messages, where, train_on)
    ids, offsets = _encode(tokenizer, full, {b for span in spans for b in span})
    labels = []
    for token, (start, _end) in zip(ids, offsets):
        inside = any(s <= start < e for s, e in spans)
        labels.append(token if inside else IGNORE)
    ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


def _encode(tokenizer, text: str, bounds: set) -> tuple:
    """Token ids and character offsets of `text`, encoded piece by piece between the span boundaries. Then the
    text before each answer is tokenized exactly as an inference prompt ending there is (tokenizers treat the end
    of a text differently: SmolLM2 makes "\n\n" one token at the end of a prompt but two before "26"), the
    answer starts on a token boundary as it does when generated, and no token mixes a label with context (where
    a template's markers are plain text, SmolLM2 would merge the "|><" of "<|eot_id|><|start_header_id|>")."""
    # the template already wrote BOS and friends into the text, so the tokenizer must not add them again
    ids, offsets = [], []
    cuts = sorted({0, len(text), *bounds})
    for a, b in zip(cuts, cuts[1:]):
        piece = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True)
        ids += piece["input_ids"]
        offsets += [(a + s, a + e) for s, e in piece["offset_mapping"]]
    return ids, offsets


def prompt_ids(tokenizer, messages: List[dict], where: str, train_on: str) -> tuple:
    """(text, token ids) of the prompt that asks for the next assistant turn after `messages`, tokenized exactly
    as tokenize_conversation tokenizes the same text in training (split at the same turn boundaries), so the
    model sees at inference the tokens it learned from."""
    text = _render(tokenizer, messages, True, where)
    bounds = set()
    if any(m["role"] == "assistant" for m in messages) and train_on != "all":
        _, spans = supervised_spans(tokenizer, messages, where, train_on)
        bounds = {b for span in spans for b in span if b < len(text)}
    ids, _ = _encode(tokenizer, text, bounds)
    return text, ids


def end_of_turn(tokenizer) -> str:
    """The text the chat template closes an assistant turn with (<|im_end|>, <|eot_id|> ...): what
    supervised_spans trains after an answer; generation stops there. "" when the template writes none."""
    full, [(start, end)] = supervised_spans(
        tokenizer,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}],
        "the chat template",
        "assistant",
    )
    return full[start:end].split("ok", 1)[-1].strip()
