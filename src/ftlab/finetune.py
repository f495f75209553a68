"""FineTune: the whole pipeline, one public method per stage, for the CLI and for notebooks.

    stats = FineTune(compose(["model=tiny", "trainer.max_steps=2"])).run()

run() reads top to bottom: checks (model source, trackers, Hub access) ▶ tokenizer + data ▶ base model ▶ LoRA
▶ Lightning fit ▶ artifacts (and trackers) ▶ Hub upload. Data comes before the base model on purpose: a bad
data file fails in a second, not after a long load; trackers and Hub access are checked before both.
Subclass and override a stage (say, `to_conversation` for another row format) to change one step.
"""
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import lightning as L
from omegaconf import DictConfig, OmegaConf

from ftlab import (artifacts, batching, cache, chat, console, data, formats, model, secrets, sources, telemetry,
                   templates, tracking)
from ftlab.checks import validate
from ftlab.configure import setup
from ftlab.console import Stages, info
from ftlab.errors import FtlabError
from ftlab.module import LoRAModule
from ftlab.sweeps.trial import Pruning


class FineTune:
    STAGES = ("Checking model source and access", "Loading tokenizer and data", "Loading base model",
              "Adding LoRA adapters", "Training", "Saving artifacts")

    def __init__(self, cfg: DictConfig, run_dir: Optional[Path] = None, command: Optional[str] = None):
        setup()
        self.cfg = validate(secrets.take_from_config(cfg))  # tokens move to the environment, out of every file
        self.run_dir = Path(run_dir) if run_dir is not None else None  # made by run(): outputs/DATE/TIME
        self.command = command  # what the user typed, for the model card; None: the --rerun command
        self.stages = Stages(self.STAGES + (("Evaluating",) if self.cfg.eval.after_train else ())
                             + (("Publishing to the Hub",) if self.cfg.hub.push else ()))
        self.trackers = None  # tracking.Trackers, made by run()
        self.precision, self._precision_why = model.resolve_precision(self.cfg.trainer.precision,
                                                                      self.cfg.trainer.accelerator)
        self.tokenizer = self.model = self.datamodule = self.trainer = None
        self.data_format = None  # qa, instruction or conversation: data.format, or detected by detect_format
        self.prepared = None  # the tokenized splits (data.Prepared), kept for preview and evaluation
        self.stats: dict = {}

    # ── stages ─────────────────────────────────────────────────────────────────────────────────────
    def model_source(self) -> str:
        return model.resolve_source(self.cfg.model, self.cfg.cache_dir, self.cfg.seed)

    def load_tokenizer(self, source, gguf_file=None):
        """The model's tokenizer with the chat template training (and later inference) renders with."""
        tokenizer = model.load_tokenizer(source, self.cfg.model, gguf_file)
        templates.apply(tokenizer, self.cfg.data.chat_template, self.cfg.model.name)
        return tokenizer

    def load_base_model(self, source: str):
        t = self.cfg.trainer
        return model.load_base_model(source, self.cfg.model, self.cfg.quant, t.accelerator, self.precision)

    def load_base_model_and_tokenizer(self) -> tuple:
        source = self.model_source()
        return self.load_base_model(source), self.load_tokenizer(source)

    def get_peft_model(self, base):
        return model.add_lora(base, self.cfg.lora, quantized=self.cfg.quant.bits is not None,
                              gradient_checkpointing=self.cfg.model.gradient_checkpointing)

    def detect_format(self, row: dict, where: str) -> str:
        """data.format, or the format whose columns `row` has (printed either way)."""
        c = self.cfg.data
        if c.format != "auto":
            info(f"data format: {c.format} (data.format)")
            return c.format
        fmt = formats.detect(row.keys(), c.columns, where)
        info(f"data format: {fmt} (detected from the columns {', '.join(map(str, row))}; set data.format to fix it)")
        return fmt

    def to_conversation(self, row: dict, where: str) -> List[dict]:
        """One data row to a list of {role, content} messages; the first row settles the format."""
        c = self.cfg.data
        if self.data_format is None:
            self.data_format = self.detect_format(row, where)
        return formats.to_messages(row, where, self.data_format, c.columns, c.system_prompt)

    def apply_chat_template(self, messages: List[dict], where: str = "conversation") -> Optional[dict]:
        """Messages to input_ids + labels (data.train_on); None if truncation left nothing to learn."""
        c = self.cfg.data
        return chat.tokenize_conversation(self.tokenizer, messages, c.max_seq_len, where, c.train_on)

    def tokenize_data(self) -> data.Prepared:
        """Read, check and tokenize every split, or load the result from the preprocessing cache."""
        c = self.cfg.data
        source = sources.open_source(c)
        stages = [self.detect_format, self.to_conversation, self.apply_chat_template]
        entry = cache.entry(self.cfg.cache_dir, cache.key(c, self.cfg.seed, source.fingerprint, self.tokenizer,
                                                          stages)) if c.cache else None
        prepared = cache.load(entry) if entry else None
        self.stats["data_fingerprint"] = source.fingerprint  # evaluation later checks the data is unchanged
        if prepared is not None:
            info(f"tokenized data: from the cache ({entry}); nothing re-read")
            if prepared.format:
                info(f"data format: {prepared.format}")
            self.data_format = prepared.format
            return prepared
        problems = sources.Problems(skip=c.skip_bad_rows)
        rows = sources.assign_splits(source.read(problems), c.val_size, c.test_size, self.cfg.seed)
        splits = data.tokenize_splits(rows, self.to_conversation, self.apply_chat_template, problems)
        prepared = data.Prepared(self.data_format, splits, problems.reasons)
        data.check_not_empty(prepared, c.max_seq_len)
        if entry:
            cache.save(entry, prepared)
        return prepared

    def prepare_data(self) -> data.ChatDataModule:
        """Tokenized splits (tokenize_data) into training rows, packed if asked, served by a LightningDataModule."""
        c = self.cfg.data
        self.prepared = self.tokenize_data()
        split = self.cfg.eval.split
        if self.cfg.eval.after_train and not self.prepared.splits.get(split, data.Split()).items:
            from ftlab.evaluate import split_fix

            raise FtlabError(f"eval.after_train=true scores the {split} split, and this data has no {split} rows; "
                             f"{split_fix(split)}")
        train = self.prepared.splits["train"].items
        rows = batching.pack(train, c.max_seq_len) if c.packing else train
        self.stats.update(data.describe(self.prepared, rows, c, self.cfg.seed))
        return data.ChatDataModule(rows, self.prepared.splits["validation"].items, c.batch_size,
                                   self.tokenizer.pad_token_id, self.cfg.seed, c.num_workers, c.group_by_length)

    def check_packing(self) -> None:
        """Packed rows are only sound if this model's attention restarts at every example; test it on the model."""
        if self.cfg.model.attn_implementation == "flash_attention_2":  # its kernels need the GPU the model isn't on yet
            info("packing: flash-attention runs each packed example as its own sequence (variable-length kernel)")
            return
        ok, leak, diff = batching.attention_stays_inside(self.model)
        if not ok:
            raise FtlabError(f"data.packing=true: {self.cfg.model.name} with attention "
                             f"{self.cfg.model.attn_implementation} lets packed examples attend to each other "
                             f"(logits moved by {diff:.2g}); set data.packing=false")
        info(f"packing: attention stays inside each example (checked on this model: logits moved by "
             f"{diff:.1g} vs {leak:.1g} across a boundary)")

    def callbacks(self) -> list:
        """Lightning callbacks of a run; extend in a subclass to add your own."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        self.throughput = console.Throughput()
        every = self.cfg.trainer.checkpoint_every_n_steps
        saver = ModelCheckpoint(dirpath=self.run_dir / "checkpoints", save_last=True, save_top_k=0,
                                every_n_train_steps=every, save_on_train_epoch_end=False)
        hint = console.ResumeHint(self.run_dir, self.run_dir / artifacts.CHECKPOINT)
        self.pruning = Pruning.from_environment()  # set when this run is a trial of an Optuna sweep
        return [saver, self.throughput, telemetry.Telemetry(), console.ProgressBar(refresh_rate=1), hint] + \
            ([self.pruning] if self.pruning else [])

    def train(self) -> dict:
        from lightning.pytorch.loggers import CSVLogger

        c, t = self.cfg, self.cfg.trainer
        module = LoRAModule(self.model, c.optim.lr, c.optim.weight_decay, c.optim.betas, c.optim.name,
                            c.optim.scheduler, c.optim.warmup_steps, c.optim.min_lr_ratio)
        validate_during = t.val_every_n_steps > 0
        self.trainer = L.Trainer(
            accelerator=t.accelerator, devices=t.devices, precision=self.precision, max_steps=t.max_steps,
            max_epochs=t.max_epochs if t.max_steps == -1 else -1,  # a step budget is not capped by epochs
            accumulate_grad_batches=t.accumulate_grad_batches,
            gradient_clip_val=t.gradient_clip_val or None, log_every_n_steps=t.log_every_n_steps,
            # val_check_interval counts micro-batches; ours counts optimizer steps
            val_check_interval=t.val_every_n_steps * t.accumulate_grad_batches if validate_during else None,
            check_val_every_n_epoch=None if validate_during else 1, num_sanity_val_steps=0,
            logger=[CSVLogger(self.run_dir, name="logs", version="")] + self.trackers.start(),
            callbacks=self.callbacks(),
            enable_model_summary=False, deterministic=True, default_root_dir=self.run_dir)
        effective = c.data.batch_size * t.accumulate_grad_batches * t.devices
        info(f"effective batch size: {effective} = {c.data.batch_size} (data.batch_size) x "
             f"{t.accumulate_grad_batches} (accumulation) x {t.devices} (devices); "
             f"~{effective * self.stats['tokens_per_row']:.0f} tokens per step")
        dm = self.datamodule
        before = self.trainer.validate(module, dataloaders=dm.val_dataloader(), verbose=False)[0]["val/loss"]
        info(f"validation loss before training: {before:.4f}")
        ckpt = self._resume_checkpoint()
        epoch, done = artifacts.resume_position(ckpt) if ckpt else (0, 0)
        module.train()  # from_pretrained and validate() leave eval mode on, which would switch dropout off
        started = time.perf_counter()
        self.trainer.fit(module, train_dataloaders=dm.train_dataloader(epoch, done),
                         val_dataloaders=dm.val_dataloader() if validate_during else None, ckpt_path=ckpt)
        fit_seconds = time.perf_counter() - started
        after = self.trainer.validate(module, dataloaders=dm.val_dataloader(), verbose=False)[0]["val/loss"]
        info(f"validation loss after training:  {after:.4f} ({after - before:+.4f})")
        tp = self.throughput
        tail = tp.losses[-max(1, len(tp.losses) // 10):]  # the last tenth of the steps, smoothing noise
        self.stats.update(
            val_loss_before=before, val_loss_after=after,
            train_loss_first_step=tp.losses[0] if tp.losses else None,
            train_loss_last_steps=sum(tail) / len(tail) if tail else None,
            steps=self.trainer.global_step, tokens_seen=tp.tokens, supervised_tokens_seen=tp.supervised,
            train_seconds=round(fit_seconds, 2),
            tokens_per_second=round(tp.tokens / tp.seconds, 1) if tp.seconds else None,
            resumed_from=str(ckpt) if ckpt else None,
            pruned_at_step=self.pruning.pruned_at if self.pruning else None)
        return self.stats

    def save(self) -> None:
        adapter = self.run_dir / "adapter"
        self.model.save_pretrained(adapter)
        # saved beside the adapter with its chat template, so inference renders prompts exactly as training did
        self.tokenizer.save_pretrained(adapter)
        self.stats.update(versions=artifacts.versions(), git_commit=artifacts.git_commit(),
                          model=self.cfg.model.name, wall_seconds=round(time.perf_counter() - self._t0, 2))
        artifacts.write_json(self.run_dir / "metrics.json", self.stats)
        artifacts.plot_losses(self.run_dir)

    def evaluate(self) -> dict:
        """Score the tuned model and its base on eval.split (evaluate.py) into <run dir>/eval; the numbers join
        metrics.json and the trackers as eval_* and base_eval_*."""
        from ftlab import evaluate, report

        self.model.eval()
        self.model.config.use_cache = True  # generation needs the KV cache training switched off
        doc = evaluate.evaluate(self.model, self.tokenizer, self.cfg, self.run_dir / "eval", str(self.run_dir),
                                adapter=True)
        console.log.info(report.table(doc))
        self.stats.update(report.flat(doc))
        artifacts.write_json(self.run_dir / "metrics.json", self.stats)
        return doc

    def check_access(self) -> None:
        """Reach the trackers and, when pushing, the Hub now: a wrong URI or token fails in seconds."""
        self.trackers = tracking.Trackers(self.cfg, self.run_dir)
        self.trackers.check()
        if self.cfg.hub.push:
            from ftlab import hub

            h = self.cfg.hub
            info(hub.preflight(h.repo_id, os.environ.get("HF_TOKEN"), retries=h.retries, retry_wait=h.retry_wait,
                               log=info))

    def write_card(self) -> Path:
        from ftlab import card

        command = self.command or f"python -m ftlab --rerun {self.run_dir}"
        return card.write(self.run_dir, self.cfg, self.stats, secrets.redact(command))

    def publish(self) -> str:
        from ftlab import hub

        h = self.cfg.hub
        url = hub.push(self.run_dir, h.repo_id, private=h.private, token=os.environ.get("HF_TOKEN"),
                       retries=h.retries, retry_wait=h.retry_wait, log=info)
        self.stats["hub_url"] = url
        return url

    # ── the pipeline ───────────────────────────────────────────────────────────────────────────────
    def run(self) -> dict:
        self._t0 = time.perf_counter()
        self.run_dir = self.run_dir or artifacts.new_run_dir()
        artifacts.claim_run_dir(self.run_dir)
        try:
            return self._run()
        except FtlabError:
            artifacts.discard_unfinished(self.run_dir)  # a run that failed before results leaves nothing
            raise
        finally:
            if self.trackers is not None and self.trackers.open:  # ended by an error or Ctrl+C
                # Lightning turns Ctrl+C during fit into sys.exit(1), after its own clean shutdown
                stopped = isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))
                self.trackers.finish(self.stats, "KILLED" if stopped else "FAILED")

    def _run(self) -> dict:
        self._save_config()
        console.setup_logging(self.run_dir)
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        console.log.info(f"ftlab run dir: {self.run_dir}")
        self.stages.start("Checking model source and access", self.cfg.model.name)
        source = self.model_source()
        self.check_access()
        self.stages.start("Loading tokenizer and data", str(self.cfg.data.path or self.cfg.data.name))
        self.tokenizer = self.load_tokenizer(source)
        self.datamodule = self.prepare_data()
        self.stages.start("Loading base model", model.describe_quant(self.cfg.quant, self.precision))
        info(f"precision: {self.precision} ({self._precision_why})")
        self.stats["precision"] = self.precision
        base = self.load_base_model(source)
        self.stages.start("Adding LoRA adapters", f"r={self.cfg.lora.r} alpha={self.cfg.lora.alpha}")
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)  # adapter init independent of loading
        self.model = self.get_peft_model(base)
        if self.cfg.data.packing:
            self.check_packing()
        trainable, total = self.model.get_nb_trainable_parameters()
        info(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
        self.stats.update(trainable_parameters=trainable, total_parameters=total)
        self.stages.start("Training")
        self.train()
        self.stages.start("Saving artifacts", str(self.run_dir))
        self.save()
        if self.cfg.eval.after_train:
            self.stages.start("Evaluating", f"{self.cfg.eval.split} split, base model vs tuned")
            self.evaluate()
        info(f"model card: {self.write_card()}")
        self.trackers.finish(self.stats, "FINISHED")
        if self.cfg.hub.push:
            self.stages.start("Publishing to the Hub", self.cfg.hub.repo_id)
            info(f"published: {self.publish()}")
            artifacts.write_json(self.run_dir / "metrics.json", self.stats)  # now with hub_url
        self.stages.finish()
        console.log.info(f"ftlab: done; adapter in {self.run_dir / 'adapter'}")
        return self.stats

    def _save_config(self) -> None:
        """CLI runs get .hydra/ from Hydra; API runs write the same config.yaml, so both re-run alike."""
        saved = self.run_dir / ".hydra" / "config.yaml"
        if not saved.exists():
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(OmegaConf.to_yaml(self.cfg))

    def _resume_checkpoint(self) -> Optional[Path]:
        if self.cfg.resume is None:
            return None
        found = artifacts.find_resume_dir(self.cfg.resume, Path("outputs")) / artifacts.CHECKPOINT
        info(f"resuming from {found}")
        return found
