"""The Lightning callbacks of a run: what a person watches (progress bar, tokens/s, the resume hint on Ctrl+C)
and the training health logged beside the loss (learning rate, gradient norm, peak memory), which Lightning
writes to metrics.csv and every tracker each trainer.log_every_n_steps."""

import resource
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from ftlab.utils.console import log
from ftlab.utils.errors import StepError


class ProgressBar(TQDMProgressBar):
    """Lightning's training bar with loss and tokens/s; validation reports its loss in one line instead."""

    def init_validation_tqdm(self):
        return Tqdm(disable=True)

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class Throughput(L.Callback):
    """Counts the real (non-padding) and supervised tokens of every optimizer step, summed over all ranks (the
    data knows them: data/steps.py), and the wall time of training; logs tokens/s, keeps the loss history. An
    online method's step (GRPO) counts the prompt and completion tokens it trained on, and its time without the
    generation, which the method logs on its own (generation_tok_s)."""

    def __init__(self):
        self.tokens = self.supervised = self.generated = 0
        self.seconds = self.generation_seconds = 0.0  # seconds: training, without the generation
        self.losses, self.steps = [], []  # steps: (real tokens, seconds) of each optimizer step
        self._t0, self._step_seconds = None, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        seconds = time.perf_counter() - self._t0
        self.seconds += seconds
        self._step_seconds += seconds
        if not batch["step_end"]:
            return
        tokens, generated = batch["step_tokens"], pl_module.step_generated
        if generated:  # an online method: it trains on its prompts and what it generated, after generating it
            tokens = int(generated["trained_tokens"])
            generating = generated["generation_seconds"] / trainer.world_size
            self.generated += int(generated["generated"])
            self.generation_seconds += generating
            self.seconds -= generating
            self._step_seconds -= generating
        self.tokens += tokens
        self.supervised += batch["step_supervised"]
        self.steps.append((tokens, self._step_seconds))
        self._step_seconds = 0.0
        self.losses.append(pl_module.step_loss)
        pl_module.log("tok/s", self.tokens / max(self.seconds, 1e-9), prog_bar=True, on_step=True)


class ResumeHint(L.Callback):
    """On Ctrl+C, say what was kept and the command that continues the run."""

    def __init__(self, run_dir: Path, checkpoint: Path):
        self.run_dir, self.checkpoint = run_dir, checkpoint

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, KeyboardInterrupt):
            return
        if self.checkpoint.is_file():
            log.info(
                f"ftlab: interrupted at step {trainer.global_step}; the last checkpoint is kept in "
                f"{self.checkpoint}. Continue with: python -m ftlab resume={self.run_dir}"
            )
        else:
            log.info(
                f"ftlab: interrupted at step {trainer.global_step}, before the first checkpoint "
                "(trainer.checkpoint_every_n_steps); nothing to resume"
            )


class CheckpointOnStepError(L.Callback):
    """A step's own code failing on the data (utils.errors.StepError: a reward function) stops the run with a
    checkpoint of its last whole step and the command that continues it once the code is fixed."""

    def __init__(self, run_dir: Path, checkpoint: Path):
        self.run_dir, self.checkpoint = run_dir, checkpoint

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, StepError) or not trainer.training:
            return
        if pl_module.step_started or trainer.world_size > 1:
            # part of a step's gradient is lost with the error, or the other ranks are not here to write their part
            # of a checkpoint: the last one written is where to continue
            where = f"the last checkpoint ({self.checkpoint})" if self.checkpoint.is_file() else "no checkpoint yet"
        else:
            # the failed micro-batch counts as not begun, so a resumed run starts with it (the run ends here anyway)
            progress = trainer.fit_loop.epoch_loop.batch_progress
            progress.current.reset_on_restart()
            progress.total.reset_on_restart()
            trainer.save_checkpoint(self.checkpoint)
            where = f"step {trainer.global_step} written to {self.checkpoint}"
        exception.args = (f"{exception}; {where}: fix it and continue with python -m ftlab resume={self.run_dir}",)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated on a GPU; on CPU the process's peak resident set (what the OS had to give)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


class Telemetry(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # Lightning clips after this hook: the norm logged is the raw one, which is what shows a blow-up
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:  # one fused (foreach) pass over the adapter's hundreds of gradients
            pl_module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)
        # the rate this step applies (the scheduler moves it right after the step)
        pl_module.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("sys/peak_memory_gb", peak_memory_gb(pl_module.device), on_step=True, on_epoch=False)
