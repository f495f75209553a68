"""The log-probability a model gives each row's labelled tokens: SFT's loss is its negative sum, the preference
methods train on it per answer, and evaluation scores losses and compares chosen and rejected answers by it."""

import inspect

import torch
import torch.nn.functional as F

from ftlab.data.chat import IGNORE


def attention_inputs(batch: dict) -> dict:
    """What keeps each example's attention to itself: packed rows carry restarting position ids and no mask
    (batching.py); padded rows an attention mask."""
    if "position_ids" in batch:
        return {"position_ids": batch["position_ids"]}
    return {"attention_mask": batch["attention_mask"]}


def answer_logps(model, batch: dict, keeps_logits: bool = True) -> tuple:
    """(summed log-probability of each row's labelled tokens, their number), in one forward pass of `model` on the
    padded (or packed) `batch` (input_ids, labels, and attention_mask or position_ids)."""
    logps, mask = token_logps(model, batch, keeps_logits)
    return logps.sum(1), mask.sum(1)


def token_logps(model, batch: dict, keeps_logits: bool = True) -> tuple:
    """(log-probability of each labelled token, 0 elsewhere; the labelled mask), both [rows, positions] over the
    positions where some row has a label. `keeps_logits`: the model takes logits_to_keep, so the vocabulary
    projection runs only at those positions (a small share with answer-only labels, and the head is a large share
    of a small model's step)."""
    ids, labels = batch["input_ids"], batch["labels"]
    targets = labels[:, 1:]
    positions = (targets != IGNORE).any(0).nonzero().squeeze(1)
    kwargs = attention_inputs(batch)
    if keeps_logits:
        kwargs["logits_to_keep"] = positions
    logits = model(input_ids=ids, **kwargs).logits
    logits = logits if keeps_logits else logits[:, :-1][:, positions]
    targets = targets[:, positions]
    # flattened, the cross-entropy runs over the last (vocabulary) dimension, contiguous; ignored positions give 0
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return -nll.view(targets.shape), targets != IGNORE


def keeps_logits(model) -> bool:
    """Whether the (PEFT) model's forward takes logits_to_keep (transformers' causal LMs do)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def device_batch(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
