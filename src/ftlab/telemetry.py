"""Training health beside the loss: learning rate, gradient norm, peak memory, logged with every step's
metrics (Lightning writes them to metrics.csv and every tracker each trainer.log_every_n_steps)."""
import resource
import sys

import lightning as L
import torch


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated on a GPU; on CPU the process's peak resident set (what the OS had to give)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


class Telemetry(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # Lightning clips after this hook: the norm logged is the raw one, which is what shows a blow-up
        grads = [p.grad.detach().float().norm() for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.stack(grads).norm(), on_step=True, on_epoch=False)
        # the rate this step applies (the scheduler moves it right after the step)
        pl_module.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("sys/peak_memory_gb", peak_memory_gb(pl_module.device), on_step=True, on_epoch=False)
