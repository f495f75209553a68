"""The LightningModule: a PEFT model trained by a method (methods/), its optimizer and schedule, and adapter-only
checkpoints."""

import functools
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import lightning as L
import torch

from ftlab.data import chat, logprobs
from ftlab.data.chat import IGNORE
from ftlab.methods import Method
from ftlab.model import fast_paths
from ftlab.train.strategy import all_ranks
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


class Forward:
    """What a method's loss asks of the model for one batch (methods/__init__.py): the log-probability of each
    row's labelled tokens, under the adapter model or the reference (the same weights, adapter off, no gradient)."""

    def __init__(self, module: "LoRAModule", tokenizer=None, seed: int = 0):
        self.module, self.tokenizer, self.seed = module, tokenizer, seed
        # what an online method learns from on its next passes over a micro-batch (GRPO's completions, with mu > 1):
        # kept between optimizer steps and in checkpoints, so a run resumed between passes goes on alike
        self.carry: dict = {}

    # what an online method (methods/grpo) needs beyond scoring: sampling, decoding, the run dir and the ranks
    @functools.cached_property
    def stop_ids(self) -> list:
        return chat.stop_ids(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def decode(self, ids: list) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @property
    def run_dir(self) -> Path:
        return Path(self.module.trainer.default_root_dir)

    @property
    def is_main(self) -> bool:
        return self.module.trainer.is_global_zero

    def all_ranks_sum(self, values: list) -> list:
        """`values` summed over every rank (one collective)."""
        local = torch.tensor(values, dtype=torch.float64)
        return self.module.trainer.strategy.reduce(local.to(self.module.device), reduce_op="sum").tolist()

    def logps(self, batch: dict, reference: bool = False) -> tuple:
        """(summed log-probability of each row's labelled tokens, their number)."""
        logps, mask = self.token_logps(batch, reference)
        return logps.sum(1), mask.sum(1)

    @contextmanager
    def generating(self):
        """The model as it samples: adapter on, dropout off, KV cache and PEFT's input casting on; as it was after."""
        module = self.module
        model, training, casting = module.model, module.model.training, module._casting
        cache = model.config.use_cache
        module.set_casting(True)
        model.eval()
        model.config.use_cache = True
        try:
            with torch.no_grad():
                yield model
        finally:
            model.config.use_cache = cache
            model.train(training)
            module.set_casting(casting)

    def token_logps(self, batch: dict, reference: bool = False) -> tuple:
        """(log-probability of each labelled token, the labelled mask), [rows, positions]: the positions where some
        row has a label (logprobs.answer_logps)."""
        module = self.module
        module.set_casting(not torch.is_autocast_enabled(batch["input_ids"].device.type))
        if not reference:
            return logprobs.token_logps(module.model, batch, module.keeps_logits)
        with torch.no_grad(), module.model.disable_adapter():
            return logprobs.token_logps(module.model, batch, module.keeps_logits)

    def nll(self, batch: dict) -> tuple:
        """(summed cross-entropy over the batch's labelled tokens, their number): Liger's fused linear cross-entropy
        with model.liger_kernels (it never holds the whole logits), else from the log-probabilities."""
        module = self.module
        if module.fused_loss is None:
            logps, count = self.logps(batch)
            return -logps.sum(), count.sum()
        module.set_casting(not torch.is_autocast_enabled(batch["input_ids"].device.type))
        base = module.model.get_base_model()
        hidden = base.model(input_ids=batch["input_ids"], **logprobs.attention_inputs(batch)).last_hidden_state[:, :-1]
        targets = batch["labels"][:, 1:]
        scored = targets != IGNORE
        return module.fused_loss(base.lm_head.weight, hidden[scored], targets[scored]), scored.sum()


class LoRAModule(L.LightningModule):
    """The PEFT model trained by a method: the method gives each micro-batch's loss and the numbers it logs; this
    module makes a step's loss the mean over the step's units on every rank, logs, and schedules the optimizer."""

    def __init__(
        self,
        model,
        method: Method,
        options,
        *,
        lr: float,
        weight_decay: float,
        betas: tuple,
        optimizer: str,
        scheduler: str,
        warmup_steps: int,
        min_lr_ratio: float,
        fused_loss: bool = False,
        tokenizer=None,
        seed: int = 0,
        val_sources: Sequence[str] = (),
    ):
        """`method`: a methods.Method and `options` its method.* options; `fused_loss`: Liger's fused linear
        cross-entropy (model.liger_kernels) for a method that can use it; `tokenizer` and `seed`: what an online
        method samples and decodes with; `val_sources`: the labels of the validation dataloaders, one per source of
        a mix (ChatDataModule.val_dataloader), each logged as val/loss_<label>; empty: one dataloader."""
        super().__init__()
        self.model, self.method, self.options = model, method, options
        self.lr, self.weight_decay, self.betas, self.optimizer_name = lr, weight_decay, tuple(betas), optimizer
        self.scheduler, self.warmup_steps, self.min_lr_ratio = scheduler, warmup_steps, min_lr_ratio
        # checkpoints hold only the trainable weights (see on_save_checkpoint), so loading is partial
        self.strict_loading = False
        self.step_loss = None  # the last optimizer step's loss, for the throughput callback's history
        self.step_generated = {}  # an online method's trained tokens and generation seconds in that step (the same)
        self._step_sums = None  # the sums (method.loss) of this optimizer step so far
        self._val_sums = {}  # {dataloader index: the sums} of this validation pass so far
        self.val_sources = list(val_sources)
        self.keeps_logits = logprobs.keeps_logits(model)
        self.fused_loss = fast_paths.fused_linear_cross_entropy() if fused_loss else None
        self._lora_layers = fast_paths.lora_layers(model)
        self._casting = True  # PEFT's cast of each adapter input to the adapter's dtype (fast_paths.set_input_casting)
        self.forward_pass = Forward(self, tokenizer, seed)
        self.logged = method.logged(options)  # the metrics it logs beside the loss

    def forward(self, batch) -> tuple:
        """(the micro-batch's loss summed over its units, {name: sum} of what the method logs)."""
        return self.method.loss(self.options, self.forward_pass, batch)

    @property
    def step_started(self) -> bool:
        """Some micro-batch of the optimizer step under way has run (its gradient is accumulating)."""
        return self._step_sums is not None

    def set_casting(self, enabled: bool) -> None:
        # Off for the whole fit, not per call: a checkpointed layer recomputed in the backward pass must cast as the
        # forward pass did. Back on when training or validation ends (generation needs them).
        if enabled != self._casting:
            fast_paths.set_input_casting(self._lora_layers, enabled)
            self._casting = enabled

    def on_train_end(self):
        self.set_casting(True)

    def on_validation_end(self):
        self.set_casting(True)

    def training_step(self, batch, batch_idx):
        # The step's loss is the mean over every unit of the step (supervised tokens, or examples), on every rank
        # (data/steps.py gives their number). Lightning divides each micro-batch's loss by the accumulation count
        # and DDP/FSDP average gradients over ranks; scaling by both undoes that, so the gradient is
        # d(sum)/d(w) / units.
        total, sums = self(batch)
        self._step_sums = _add(self._step_sums, sums)
        if batch["step_end"]:
            # one collective per optimizer step: every rank's sums, so the logged figures cover the whole step
            reduced = self._reduce(self._step_sums)
            metrics = self.method.ratios(reduced)
            self._step_sums = None
            self.step_loss = metrics["loss"]
            # an online method's step also trains on what it generated, in time it did not spend generating
            keys = ("trained_tokens", "generated", "generation_seconds")
            self.step_generated = {k: reduced[k] for k in keys if k in reduced}
            self.log("train/loss", self.step_loss, prog_bar=True, on_step=True, batch_size=1)
            for name, metric in self.logged.items():
                if name in metrics:
                    self.log(f"train/{name}", metrics[name], on_step=True, batch_size=1, prog_bar=metric.shown)
        count = max(int(batch["step_units"]), 1)
        return total * (self.trainer.accumulate_grad_batches * self.trainer.world_size / count)

    def on_validation_epoch_start(self):
        self._val_sums = {}

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        # summed, not averaged: the pass's figures are over all validation units, whatever the batch boundaries
        # and whichever rank scored them; kept per dataloader (a source of a mix) and added up at the end
        _, sums = self(batch)
        self._val_sums[dataloader_idx] = _add(self._val_sums.get(dataloader_idx), sums)

    def on_validation_epoch_end(self):
        total = functools.reduce(_add, self._val_sums.values(), None) or {}
        # each source's loss and units join the same collective: its loss is their ratio, whatever the method
        for i in range(len(self.val_sources)):
            total.update({f"{k}@{i}": self._val_sums.get(i, {}).get(k, 0.0) for k in ("loss", "units")})
        reduced = self._reduce(total)
        metrics = self.method.ratios(reduced)
        self.log("val/loss", metrics["loss"], prog_bar=True)
        for name, metric in self.logged.items():
            if metric.validated and name in metrics:
                self.log(f"val/{name}", metrics[name])
        for i, label in enumerate(self.val_sources):
            self.log(f"val/loss_{label}", reduced[f"loss@{i}"] / max(reduced[f"units@{i}"], 1))

    def _reduce(self, sums: dict) -> dict:
        """The sums of every rank, in one collective (and one more for the max_ values): {name: float}."""
        names = sorted(set(sums) | {"loss", "units"})
        local = torch.stack([torch.as_tensor(sums.get(k, 0.0), dtype=torch.float64).cpu() for k in names])
        out = dict(zip(names, self.trainer.strategy.reduce(local.to(self.device), reduce_op="sum").tolist()))
        largest = [k for k in names if k.startswith("max_")]  # a largest value, not a sum: the largest of every rank's
        if largest:
            mine = torch.tensor([float(sums.get(k, 0.0)) for k in largest], dtype=torch.float64)
            out.update(zip(largest, self.trainer.strategy.reduce(mine.to(self.device), reduce_op="max").tolist()))
        return out

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer of the trainable parameters (optim.name), without its schedule."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.optimizer_name == "adamw_8bit":
            import bitsandbytes as bnb  # here, not above: only optim.name=adamw_8bit needs it

            return bnb.optim.AdamW8bit(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)

    def configure_optimizers(self):
        optimizer = self.make_optimizer()
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
        if self.trainer.world_size == 1:
            checkpoint["ftlab_carry"] = [self.forward_pass.carry]
        else:
            carries = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(carries, self.forward_pass.carry)
            checkpoint["ftlab_carry"] = carries

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("ftlab_world_size", 1)
        if saved != self.trainer.world_size:
            raise FtlabError(
                f"the checkpoint was written by {saved} process(es) and this run has {self.trainer.world_size}; resume "
                f"with trainer.devices x trainer.num_nodes = {saved}, so the data restarts where it stopped"
            )
        carries = checkpoint.get("ftlab_carry")
        if carries:
            self.forward_pass.carry = carries[self.global_rank]
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


def _add(sums, more: dict) -> dict:
    more = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in more.items()}
    if sums is None:
        return more
    keys = list(sums) + [k for k in more if k not in sums]
    return {
        k: max(sums.get(k, 0), more.get(k, 0)) if k.startswith("max_") else sums.get(k, 0) + more.get(k, 0)
        for k in keys
    }
