"""Raw documents for continued pretraining: {text}; every token is learnt, each document ends with EOS.

A document longer than data.max_seq_len is cut into consecutive blocks of that length rather than truncated: in
pretraining the rest of a document is data, not noise. With data.packing=true the blocks of all documents are
packed into rows of data.max_seq_len (batching.pack); position ids restart at every document, so attention never
crosses from one document into the next, and the EOS that ends each document is learnt like any other token.
"""

from dataclasses import dataclass
from typing import List, Optional

from ftlab.data.formats import FORMATS, Format, text_field


@dataclass
class Columns:
    text: str = "text"
    """the document."""


@FORMATS.register
class Text(Format):
    name = "text"
    needs = "text"
    priority = 50
    Columns = Columns
    no_answers = (
        "eval.after_train and ftlab.evaluate score answers to chat prompts, and text data has none; its measure is "
        "the validation loss (set eval.after_train=false)"
    )

    def wants(self, columns) -> str:
        return f"text needs {columns.text}"

    def detect(self, row: dict, columns) -> bool:
        return columns.text in row

    def parse(self, row: dict, where: str, data) -> str:
        return text_field(row, data.columns.text, where, key="text")

    def tokenize(self, tokenizer, parsed: str, data, where: str):
        return blocks(tokenizer, parsed, data.max_seq_len)

    def prompt(self, row: dict, where: str, columns):
        return None  # a document asks nothing


def blocks(tokenizer, text: str, max_len: int) -> Optional[List[dict]]:
    """The document's blocks of at most `max_len` tokens, every label the token itself; None if it has fewer than
    two tokens (nothing to learn). The tokenizer adds what it adds to any text (BOS for Llama-style vocabularies)
    and EOS closes the document, so a model learns where one ends. The blocks, joined, are exactly those tokens.
    The first token of each block has no earlier token to be predicted from, so it teaches nothing: no block is
    a single token (a remainder of one takes a token from the block before), so neither the EOS nor any other
    token is ever dropped."""
    ids = tokenizer(text, verbose=False)["input_ids"]  # verbose=False: long documents are expected, no warning
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]
    if len(ids) < 2:
        return None
    starts = list(range(0, len(ids), max_len))
    if max_len > 2 and len(starts) > 1 and len(ids) - starts[-1] == 1:
        starts[-1] -= 1  # the last two blocks: max_len - 1 and 2 tokens
    bounds = starts + [len(ids)]
    return [{"input_ids": ids[a:b], "labels": ids[a:b]} for a, b in zip(bounds, bounds[1:])]
