"""The LightningModule: a PEFT model, its loss, optimizer and schedule, and adapter-only checkpoints."""

import math

import lightning as L
import torch

from ftlab.data.chat import IGNORE
from ftlab.model import fast_paths
from ftlab.train.strategy import all_ranks
from ftlab.use import logprobs
from ftlab.utils.errors import FtlabError


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
        fused_loss: bool = False,
    ):
        """`fused_loss`: Liger's fused linear cross-entropy (model.liger_kernels) instead of logits + cross-entropy."""
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.betas, self.optimizer_name = lr, weight_decay, tuple(betas), optimizer
        self.scheduler, self.warmup_steps, self.min_lr_ratio = scheduler, warmup_steps, min_lr_ratio
        # checkpoints hold only the trainable weights (see on_save_checkpoint), so loading is partial
        self.strict_loading = False
        self._val_sum = self._val_count = 0
        self._step_sum, self.step_loss = 0, None  # this step's loss so far; the last step's
        self._keeps_logits = logprobs.keeps_logits(model)
        self._fused_loss = fast_paths.fused_linear_cross_entropy() if fused_loss else None
        self._lora_layers = fast_paths.lora_layers(model)
        self._casting = True  # PEFT's cast of each adapter input to the adapter's dtype (fast_paths.set_input_casting)

    def forward(self, batch) -> tuple:
        """(summed cross-entropy over the batch's supervised tokens, their number)."""
        ids = batch["input_ids"]
        # Off for the whole fit, not per call: a checkpointed layer recomputed in the backward pass must cast as the
        # forward pass did. Back on when training or validation ends (generation needs them).
        self._set_casting(not torch.is_autocast_enabled(ids.device.type))
        if self._fused_loss is not None:
            base = self.model.get_base_model()
            hidden = base.model(input_ids=ids, **logprobs.attention_inputs(batch)).last_hidden_state[:, :-1]
            targets = batch["labels"][:, 1:]
            scored = targets != IGNORE
            total = self._fused_loss(base.lm_head.weight, hidden[scored], targets[scored])
            return total, scored.sum()
        logps, count = logprobs.answer_logps(self.model, batch, self._keeps_logits)
        return -logps.sum(), count.sum()

    def _set_casting(self, enabled: bool) -> None:
        if enabled != self._casting:
            fast_paths.set_input_casting(self._lora_layers, enabled)
            self._casting = enabled

    def on_train_end(self):
        self._set_casting(True)

    def on_validation_end(self):
        self._set_casting(True)

    def training_step(self, batch, batch_idx):
        # The step's loss is the mean over every supervised token of the step, on every rank (data/steps.py gives
        # their number). Lightning divides each micro-batch's loss by the accumulation count and DDP/FSDP
        # average gradients over ranks; scaling by both undoes that, so the gradient is d(sum)/d(w) / count.
        total, _ = self(batch)
        count = max(int(batch["step_units"]), 1)  # the step's supervised tokens
        self._step_sum = self._step_sum + total.detach() / count
        if batch["step_end"]:
            # one collective per optimizer step: the step's loss summed over ranks is its mean over all tokens
            self.step_loss = float(self.trainer.strategy.reduce(self._step_sum, reduce_op="sum"))
            self._step_sum = 0
            self.log("train/loss", self.step_loss, prog_bar=True, on_step=True, batch_size=1)
        return total * (self.trainer.accumulate_grad_batches * self.trainer.world_size / count)

    def on_validation_epoch_start(self):
        self._val_sum = self._val_count = 0

    def validation_step(self, batch, batch_idx):
        # summed, not averaged: the epoch's loss is the mean over all validation tokens, whatever the batch
        # boundaries and whichever rank scored them
        total, count = self(batch)
        self._val_sum += total.detach()
        self._val_count += count

    def on_validation_epoch_end(self):
        sums = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in (self._val_sum, self._val_count)])
        total, count = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").tolist()
        self.log("val/loss", total / max(count, 1), prog_bar=True)

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
        # Dropout draws from each rank's global generator: with every rank's state, a resumed run retraces the
        # interrupted one. Every rank calls this hook (only rank 0 writes the file), so the states are gathered.
        checkpoint["ftlab_world_size"] = self.trainer.world_size
        cpu = all_ranks(self.trainer, torch.get_rng_state())
        cuda = (
            all_ranks(self.trainer, torch.cuda.get_rng_state(self.device))
            if self.device.type == "cuda"
            else [None] * len(cpu)
        )
        checkpoint["ftlab_rng"] = [{"cpu": c, "cuda": g} for c, g in zip(cpu, cuda)]

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("ftlab_world_size", 1)
        if saved != self.trainer.world_size:
            raise FtlabError(
                f"the checkpoint was written by {saved} process(es) and this run has {self.trainer.world_size}; resume "
                f"with trainer.devices x trainer.num_nodes = {saved}, so the data restarts where it stopped"
            )
        rng = checkpoint.get("ftlab_rng")
        if isinstance(rng, dict):  # written before the states were kept per rank: one process, all its GPUs
            torch.set_rng_state(rng["cpu"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        elif rng:
            mine = rng[self.global_rank]
            torch.set_rng_state(mine["cpu"])
            if mine.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
