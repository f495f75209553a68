"""Supervised fine-tuning (method=sft, the default): the labelled tokens' cross-entropy, the mean over every
supervised token of a step. Chat rows label their assistant turns (data.train_on); text documents every token,
for continued pretraining on a domain."""

from dataclasses import dataclass

from ftlab.methods import METHODS, Method

TRAIN_ON = {"assistant": "every assistant turn", "last_assistant": "the last assistant turn", "all": "every token"}


@dataclass
class Options:
    name: str = "sft"


@METHODS.register
class SFT(Method):
    name = "sft"
    summary = "learn the answers: the assistant turns of chat rows (data.train_on), or every token of text"
    Options = Options
    kind = "tokens"
    per_example = False
    packs = True
    fused_loss = True

    def loss(self, options, forward, batch: dict):
        total, count = forward.nll(batch)
        return total, {"loss": total.detach(), "units": count}

    def loss_on(self, cfg, data_format) -> str:
        if data_format == "text":
            return "every token of each document (continued pretraining)"
        train_on = cfg.data.train_on
        return f"{TRAIN_ON.get(train_on, train_on)} (`data.train_on={train_on}`)"
