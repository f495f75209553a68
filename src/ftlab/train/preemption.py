"""Preemption: a scheduler's stop signal ends a run with a checkpoint, the command that continues it, and an exit
status that says it did not finish.

Kubernetes and SLURM stop a job with SIGTERM (SLURM first sends the signal asked for with --signal, e.g.
USR1@90, when it is about to requeue it). Lightning's own SIGTERM handling stops between micro-batches and exits
with status 0, which a scheduler reads as "finished" and which loses an accumulating step. Instead, during fit:

  - the signal is noted, and the optimizer step under way finishes (every rank agrees once per step, so a rank
    that was not signalled stops at the same step);
  - every rank writes the checkpoint at that step (checkpoints/last.ckpt, the one before kept);
  - under SLURM's auto-requeue, Lightning's requeue handler runs (its own checkpoint, then scontrol requeue);
  - the run stops with Preempted: exit status 128 + the signal (143 for SIGTERM), the resume command printed.

`resume=auto` in the job's command then continues where it stopped when the scheduler runs it again.
"""

import signal
from pathlib import Path

import lightning as L
import torch

from ftlab.utils.errors import FtlabError

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(FtlabError):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class Preemption(L.Callback):
    def __init__(self, run_dir: Path, checkpoint: Path):
        self.run_dir, self.checkpoint = run_dir, checkpoint
        self.received = 0

    def on_train_start(self, trainer, pl_module):
        # Replaces the handlers Lightning installed for fit; when fit ends Lightning puts back the ones from
        # before fit, so outside training a stop signal stops the process at once, as usual.
        self.received = 0
        for signum in SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum, frame) -> None:
        self.received = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not batch["step_end"]:  # finish the optimizer step under way
            return
        signum = self.received
        if trainer.world_size > 1:  # one decision for all ranks, taken at the same step
            signum = int(trainer.strategy.reduce(torch.tensor(signum, device=pl_module.device), reduce_op="max"))
        if not signum:
            return
        trainer.save_checkpoint(self.checkpoint)
        if signum == signal.SIGUSR1 and _slurm_requeues(trainer):
            # Lightning's auto-requeue: its own checkpoint, then `scontrol requeue` from rank 0
            trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)
        name = signal.Signals(signum).name
        raise Preempted(
            f"{name} at step {trainer.global_step}: checkpoint written to {self.checkpoint}; continue with "
            f"python -m ftlab resume={self.run_dir} (or resume=auto in the same command)",
            signum,
        )


def _slurm_requeues(trainer) -> bool:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    environment = trainer._accelerator_connector.cluster_environment
    return isinstance(environment, SLURMEnvironment) and environment.auto_requeue
