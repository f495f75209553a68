"""The log-probability a model gives each row's labelled tokens: what the preference methods train on and what
evaluation compares chosen and rejected answers by."""

import inspect

import torch
import torch.nn.functional as F

from ftlab.data.chat import IGNORE


def answer_logps(model, batch: dict, keeps_logits: bool = True) -> tuple:
    """(summed log-probability of each row's labelled tokens, their number), in one forward pass of `model` on the
    padded `batch` (input_ids, attention_mask, labels). `keeps_logits`: the model takes logits_to_keep, so the
    vocabulary projection runs only at positions where some row has a label (a small share with answer-only
    labels, and the head is a large share of a small model's step)."""
    ids, labels = batch["input_ids"], batch["labels"]
    targets = labels[:, 1:]
    positions = (targets != IGNORE).any(0).nonzero().squeeze(1)
    kwargs = {"attention_mask": batch["attention_mask"]}
    if keeps_logits:
        kwargs["logits_to_keep"] = positions
    logits = model(input_ids=ids, **kwargs).logits
    logits = logits if keeps_logits else logits[:, :-1][:, positions]
    targets = targets[:, positions]
    mask = targets != IGNORE
    token_logps = -F.cross_entropy(logits.float().transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none")
    return token_logps.masked_fill(~mask, 0.0).sum(1), mask.sum(1)


def keeps_logits(model) -> bool:
    """Whether the (PEFT) model's forward takes logits_to_keep (transformers' causal LMs do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def device_batch(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
