"""The Lightning side of a run: the Trainer built from the `trainer` options, the validation loss, and the
numbers a fit leaves for metrics.json."""

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from ftlab.train.callbacks import Throughput
from ftlab.train.checkpoints import KeepPrevious


def make_trainer(t, precision: str, run_dir: Path, loggers: list, callbacks: list, strategy="auto") -> L.Trainer:
    """`t`: the trainer options; `precision`: trainer.precision with auto settled (model.load.resolve_precision);
    `strategy`: strategy.make_strategy's."""
    validate_during = t.val_every_n_steps > 0
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        # the data shards itself over ranks (data/steps.py): Lightning's DistributedSampler would repeat examples
        # to even out the ranks, and it knows nothing of the step token totals or of resuming mid-epoch
        use_distributed_sampler=False,
        plugins=[KeepPrevious()],
        precision=precision,
        max_steps=t.max_steps,
        max_epochs=t.max_epochs if t.max_steps == -1 else -1,  # a step budget is not capped by epochs
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val or None,
        log_every_n_steps=t.log_every_n_steps,
        # val_check_interval counts micro-batches; ours counts optimizer steps
        val_check_interval=t.val_every_n_steps * t.accumulate_grad_batches if validate_during else None,
        check_val_every_n_epoch=None if validate_during else 1,
        num_sanity_val_steps=0,
        logger=[CSVLogger(run_dir, name="logs", version="")] + loggers,
        callbacks=callbacks,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=run_dir,
    )


def validation_metrics(trainer: L.Trainer, module: L.LightningModule, datamodule) -> dict:
    """{loss: ...}: the loss over every validation unit (LoRAModule.validation_step), and the metrics the method
    validates (the preference methods' accuracy and margin)."""
    logged = trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)[0]
    return {k.split("/", 1)[1]: float(v) for k, v in logged.items() if k.startswith("val/")}


def describe(metrics: dict, logged: dict, before: dict = None) -> str:
    """ "0.6931", or after training "0.4512 (-0.2419)"; with each source's loss of a mix and the metrics the method
    validates (methods/), e.g. "; chats 0.4012 (-0.2101), faq 0.5533 (-0.2777)", "; accuracy 75.0% (+75.0 pts)"."""
    loss = f"{metrics['loss']:.4f}" + (f" ({metrics['loss'] - before['loss']:+.4f})" if before else "")
    extra = []
    for k in sorted(k for k in metrics if k.startswith("loss_")):  # each source of a mix (val/loss_<label>)
        was = (before or {}).get(k)
        change = f" ({metrics[k] - was:+.4f})" if was is not None else ""
        extra.append(f"{k[len('loss_') :]} {metrics[k]:.4f}{change}")
    for k, metric in logged.items():
        if metric.validated and k in metrics:
            v, was = metrics[k], (before or {}).get(k)
            shown = f"{100 * v:.1f}%" if metric.percent else f"{v:.4f}"
            if was is not None:
                shown += f" ({100 * (v - was):+.1f} pts)" if metric.percent else f" ({v - was:+.4f})"
            extra.append(f"{k} {shown}")
    return loss + ("; " + ", ".join(extra) if extra else "")


def stats(trainer: L.Trainer, throughput: Throughput, seconds: float) -> dict:
    """What the fit did, for metrics.json: steps and epochs, tokens, time, tokens/s and the loss at both ends."""
    losses = throughput.losses
    tail = losses[-max(1, len(losses) // 10) :]  # the last tenth of the steps, smoothing noise
    online = {}
    if throughput.generated:  # an online method: its generation apart from its training (train_seconds has both)
        online = dict(generated_tokens=throughput.generated, generation_seconds=round(throughput.generation_seconds, 2))
    return dict(
        **online,
        train_loss_first_step=losses[0] if losses else None,
        train_loss_last_steps=sum(tail) / len(tail) if tail else None,
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        tokens_seen=throughput.tokens,
        supervised_tokens_seen=throughput.supervised,
        train_seconds=round(seconds, 2),
        tokens_per_second=round(throughput.tokens / throughput.seconds, 1) if throughput.seconds else None,
    )
