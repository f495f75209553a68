"""Token sequences with labels: a chat conversation (its assistant turns labelled) or a block of a text document
(every token labelled). The kind SFT trains on, and the only one that packs."""

from typing import List

from ftlab.data import batching
from ftlab.data.chat import IGNORE
from ftlab.data.kinds import KINDS, Kind, marked


@KINDS.register
class Tokens(Kind):
    name = "tokens"
    packable = True

    def collate(self, items: List[dict], pad_id: int) -> dict:
        return batching.pad(items, pad_id)

    def show(self, tokenizer, item: dict, index, color: bool) -> str:
        labelled = sum(label != IGNORE for label in item["labels"])
        head = f"\n── example {index}: {len(item['input_ids'])} tokens, {labelled} supervised ──"
        return head + "\n" + marked(tokenizer, item["input_ids"], item["labels"], color)
