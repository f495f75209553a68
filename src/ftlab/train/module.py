"""The LightningModule: a PEFT model, its loss, optimizer and schedule, and adapter-only checkpoints."""

import inspect
import math

import lightning as L
import torch
import torch.nn.functional as F

from ftlab.data.chat import IGNORE


def lr_lambda(scheduler: str, warmup: int, total: int, floor: float):
    """Multiplier on the peak rate: linear warmup, then cosine/linear decay to `floor`, or constant."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if scheduler == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if scheduler == "cosine" else 1 - progress
        return floor + (1 - floor) * decay

    return factor


class LoRAModule(L.LightningModule):
    def __init__(
        self,
        model,
        lr: float,
        weight_decay: float,
        betas: tuple,
        optimizer: str,
        scheduler: str,
        warmup_steps: int,
        min_lr_ratio: float,
    ):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.betas, self.optimizer_name = lr, weight_decay, tuple(betas), optimizer
        self.scheduler, self.warmup_steps, self.min_lr_ratio = scheduler, warmup_steps, min_lr_ratio
        # checkpoints hold only the trainable weights (see on_save_checkpoint), so loading is partial
        self.strict_loading = False
        self._val_sum = self._val_count = 0
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.get_base_model().forward).parameters

    def forward(self, batch) -> torch.Tensor:
        """Mean cross-entropy over the batch's supervised tokens (the same value as the model's own loss)."""
        ids, labels = batch["input_ids"], batch["labels"]
        # packed rows: restarting position ids, and no mask, keep each example's attention to itself (batching.py)
        inputs = (
            {"position_ids": batch["position_ids"]}
            if "position_ids" in batch
            else {"attention_mask": batch["attention_mask"]}
        )
        if not self._keeps_logits:
            return self.model(input_ids=ids, labels=labels, **inputs).loss
        # Project onto the vocabulary only at positions that predict a label: with response-only labels
        # that is a small share of the sequence, and the head is a large share of a small model's step.
        positions = (labels[:, 1:] != IGNORE).any(0).nonzero().squeeze(1)
        logits = self.model(input_ids=ids, logits_to_keep=positions, **inputs).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels[:, positions + 1].flatten(), ignore_index=IGNORE)

    def training_step(self, batch, batch_idx):
        loss = self(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def on_validation_epoch_start(self):
        self._val_sum = self._val_count = 0

    def validation_step(self, batch, batch_idx):
        # the model's loss is a mean over this batch's supervised tokens; weight it by their number so the
        # epoch's loss is the mean over all validation tokens, whatever the batch boundaries
        n = (batch["labels"][:, 1:] != IGNORE).sum()
        self._val_sum += self(batch).float().detach() * n
        self._val_count += n

    def on_validation_epoch_end(self):
        self.log("val/loss", self._val_sum / max(self._val_count, 1), prog_bar=True)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer_name == "adamw_8bit":
            import bitsandbytes as bnb  # here, not above: only optim.name=adamw_8bit needs it

            optimizer = bnb.optim.AdamW8bit(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        # known only once the trainer has seen the datamodule, which is why this lives here
        total = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.scheduler, self.warmup_steps, total, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint):
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        # dropout draws from the global generator: with its state, a resumed run retraces the interrupted one
        checkpoint["ftlab_rng"] = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint):
        rng = checkpoint.get("ftlab_rng")
        if rng is not None:
            torch.set_rng_state(rng["cpu"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
