"""A KTO example: a prompt, one answer scored on its tokens, and whether the answer is desirable.

  {input_ids, labels, prompt_len, desirable}

A batch of B examples is 2B rows: the B answers, then each prompt with the next example's answer (KTO's
mismatched pairs, whose log-ratio estimates the reference point; prompt_len says where an answer starts), with
`desirable` per example."""

from typing import List

import torch

from ftlab.data import batching
from ftlab.data.chat import IGNORE
from ftlab.data.kinds import KINDS, Kind, marked


@KINDS.register
class Judged(Kind):
    name = "judged"

    def collate(self, items: List[dict], pad_id: int) -> dict:
        mismatched = []
        for i, x in enumerate(items):
            y = items[(i + 1) % len(items)]
            p, q = x["prompt_len"], y["prompt_len"]
            mismatched.append(
                {"input_ids": x["input_ids"][:p] + y["input_ids"][q:], "labels": [IGNORE] * p + y["labels"][q:]}
            )
        answers = [{"input_ids": x["input_ids"], "labels": x["labels"]} for x in items]
        out = batching.pad(answers + mismatched, pad_id)
        out["desirable"] = torch.tensor([x["desirable"] for x in items], dtype=torch.bool)
        return out

    def show(self, tokenizer, item: dict, index, color: bool) -> str:
        labelled = sum(label != IGNORE for label in item["labels"])
        judged = "desirable" if item["desirable"] else "undesirable"
        head = f"\n── example {index}: {len(item['input_ids'])} tokens, {labelled} supervised, {judged} ──"
        return head + "\n" + marked(tokenizer, item["input_ids"], item["labels"], color)
