"""A preference pair: one prompt, a chosen and a rejected answer, each scored on its answer tokens.

  {input_ids, labels}             prompt + chosen answer
  {rejected_ids, rejected_labels} prompt + rejected answer

A batch of B pairs is 2B rows, the B chosen answers then the B rejected ones (`pairs`: B), so one forward pass
scores both."""

from typing import List

import torch

from ftlab.data import batching, logprobs
from ftlab.data.chat import IGNORE
from ftlab.data.kinds import KINDS, Kind, marked, supervised


@KINDS.register
class Pair(Kind):
    name = "pair"
    reported = {
        "preference_accuracy": ("preference accuracy", True),
        "preference_margin": ("preference margin (mean log-prob)", False),
    }
    explained = (
        "Preference accuracy: the share of pairs whose chosen answer has the higher mean token log-probability; the "
        "margin is the mean difference."
    )

    def rows(self, item: dict) -> tuple:
        return len(item["input_ids"]), len(item["rejected_ids"])

    def supervised(self, item: dict) -> int:
        return supervised(item["labels"]) + supervised(item["rejected_labels"])

    def collate(self, items: List[dict], pad_id: int) -> dict:
        chosen = [{"input_ids": x["input_ids"], "labels": x["labels"]} for x in items]
        rejected = [{"input_ids": x["rejected_ids"], "labels": x["rejected_labels"]} for x in items]
        out = batching.pad(chosen + rejected, pad_id)
        out["pairs"] = len(items)
        return out

    def show(self, tokenizer, item: dict, index, color: bool) -> str:
        """The prompt both answers share, once; then the chosen and the rejected answer, scored tokens marked."""
        sides = {
            "chosen": (item["input_ids"], item["labels"]),
            "rejected": (item["rejected_ids"], item["rejected_labels"]),
        }
        (ids, labels), (other, _) = sides["chosen"], sides["rejected"]
        shared = 0  # the prompt: the tokens both sides open with, up to the first scored one
        while shared < min(len(ids), len(other)) and ids[shared] == other[shared] and labels[shared] == IGNORE:
            shared += 1
        counts = [sum(label != IGNORE for label in side[1]) for side in sides.values()]
        lines = [
            f"\n── pair {index}: prompt {shared} tokens; chosen {counts[0]} scored, rejected {counts[1]} scored ──",
            tokenizer.decode(ids[:shared]),
        ]
        for name, (side_ids, side_labels) in sides.items():
            lines.append(
                f"── {name}: " + marked(tokenizer, side_ids[shared:], side_labels[shared:], color).rstrip("\n")
            )
        return "\n".join(lines)

    def scores(self, model, items: List[dict], batch_size: int, pad_id: int) -> dict:
        """preference_accuracy: the share of pairs whose chosen answer the model finds likelier than the rejected one,
        by mean token log-probability (summed, a short answer would win for being short); preference_margin: the mean
        of that difference. Unlike training's rewards these need no reference, so base and tuned are scored alike."""
        margins = []
        device = next(model.parameters()).device
        for i in range(0, len(items), batch_size):
            batch = logprobs.device_batch(self.collate(items[i : i + batch_size], pad_id), device)
            with torch.no_grad():
                logps, count = logprobs.answer_logps(model, batch, logprobs.keeps_logits(model))
            mean, half = logps / count.clamp(min=1), logps.shape[0] // 2
            margins += (mean[:half] - mean[half:]).tolist()
        if not margins:
            return {}
        return {
            "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
            "preference_margin": sum(margins) / len(margins),
        }
