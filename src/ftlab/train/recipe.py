"""FineTune: the whole pipeline as one recipe, one public method per stage, for every command and for notebooks.

    stats = FineTune(compose(["model=tiny", "trainer.max_steps=2"])).run()

run() reads top to bottom: checks (model source, trackers, Hub access) ▶ tokenizer + data ▶ base model ▶ LoRA
▶ Lightning fit ▶ artifacts (and trackers) ▶ evaluation ▶ Hub upload. Data comes before the base model on purpose:
a bad data file fails in a second, not after a long load; trackers and Hub access are checked before both.

Every command goes through these stages, so a subclass that overrides one (say `to_conversation`, for a row
format of its own) changes it everywhere: training and `ftlab.preview` tokenize with to_conversation and
apply_chat_template; evaluation builds its examples with the same two (evaluation_examples); inference and
evaluation load a finished run with load_trained_tokenizer / load_trained and render prompts with prompt_ids.
"""

import logging
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ftlab import tracking
from ftlab.config.checks import validate
from ftlab.config.compose import setup
from ftlab.data import batching, cache, chat, formats, preference, sources, splits, templates, text
from ftlab.data.datamodule import ChatDataModule
from ftlab.hub import card, push
from ftlab.model import adapter, fast_paths, load, source
from ftlab.sweeps.env import TrialEnv
from ftlab.sweeps.trial import Pruning
from ftlab.train import callbacks, checkpoints, fit, plots, rundir, strategy
from ftlab.train.module import LoRAModule
from ftlab.train.preemption import Preemption
from ftlab.train.preference import PreferenceModule
from ftlab.use import prompts, report, scoring
from ftlab.utils import ranks, secrets
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.errors import ConfigError, FtlabError
from ftlab.utils.files import new_run_dir, write_json, write_text

TEXT_HAS_NO_ANSWERS = (
    "eval.after_train and ftlab.evaluate score answers to chat prompts, and text data has none; its measure is the "
    "validation loss (set eval.after_train=false)"
)


class FineTune:
    STAGES = (
        "Checking model source and access",
        "Loading tokenizer and data",
        "Loading base model",
        "Adding LoRA adapters",
        "Training",
        "Saving artifacts",
    )

    module_class = LoRAModule  # the LightningModule that trains the PEFT model; a subclass may bring its own

    def __init__(self, cfg: DictConfig, run_dir: Optional[Path] = None, command: Optional[str] = None):
        setup()
        self.cfg = validate(secrets.take_from_config(cfg))  # tokens move to the environment, out of every file
        self.run_dir = Path(run_dir) if run_dir is not None else None  # made by run(): outputs/DATE/TIME
        self.command = command  # what the user typed, for the model card; None: the --rerun command
        self.stages = Stages(
            self.STAGES
            + (("Evaluating",) if self.cfg.eval.after_train else ())
            + (("Publishing to the Hub",) if self.cfg.hub.push else ())
        )
        self.trial = TrialEnv.from_environment()  # set when this run is a trial of an Optuna sweep
        # every rank of a multi-process job runs this recipe; rank 0 alone prints, writes files and reports
        self.main = ranks.is_main()
        self.trackers = None  # tracking.Trackers, made by check_access()
        self.precision, self._precision_why = load.resolve_precision(
            self.cfg.trainer.precision, self.cfg.trainer.accelerator
        )
        self.tokenizer = self.model = self.datamodule = self.trainer = self.adapter_weights = None
        self.data_format = None  # formats.FORMATS: data.format, or detected by detect_format
        self.prepared = None  # the tokenized splits (splits.Prepared), kept for preview
        self.train_rows = None  # the training rows as batched: packed with data.packing
        self._on_gpu = load.device_for(self.cfg.trainer.accelerator) == "cuda"
        self.attention = None  # model.attn_implementation settled (choose_attention); None: not yet
        self.stats: dict = {}

    # ── model stages ───────────────────────────────────────────────────────────────────────────────
    def model_source(self) -> str:
        return source.resolve_source(self.cfg.model, self.cfg.cache_dir, self.cfg.seed)

    def load_tokenizer(self, source_dir, gguf_file=None):
        """The model's tokenizer with the chat template training (and later inference) renders with."""
        tokenizer = load.load_tokenizer(source_dir, self.cfg.model, gguf_file)
        templates.apply(tokenizer, self.cfg.data.chat_template, self.cfg.model.name)
        return tokenizer

    def load_base_model(self, source_dir: str):
        m, t = self.cfg.model, self.cfg.trainer
        sharded = t.strategy == "fsdp"
        attention = self.attention or fast_paths.resolve_attention(m.attn_implementation, self._on_gpu)[0]
        return load.load_base_model(source_dir, m, self.cfg.quant, t.accelerator, self.precision, attention, sharded)

    def load_base_model_and_tokenizer(self) -> tuple:
        source_dir = self.model_source()
        return self.load_base_model(source_dir), self.load_tokenizer(source_dir)

    def choose_attention(self, rows: List[dict]) -> str:
        """model.attn_implementation with auto settled for this device and these training rows (printed)."""
        longest = max((max(len(r["input_ids"]), len(r.get("rejected_ids", ()))) for r in rows), default=0)
        self.attention, why = fast_paths.resolve_attention(self.cfg.model.attn_implementation, self._on_gpu, longest)
        info(f"attention: {self.attention} ({why})")
        return self.attention

    def get_peft_model(self, base):
        """`base` with LoRA adapters, as training runs it: with Liger's kernels and compiled layers when asked."""
        if self.cfg.model.liger_kernels:  # before LoRA: Liger swaps module forwards, PEFT then wraps the linears
            fast_paths.apply_liger(base)
            info("Liger kernels: RoPE, RMSNorm, SwiGLU, fused linear cross-entropy")
        model = load.add_lora(
            base,
            self.cfg.lora,
            quantized=self.cfg.quant.bits is not None,
            gradient_checkpointing=self.cfg.model.gradient_checkpointing,
            sharded=self.cfg.trainer.strategy == "fsdp",
        )
        if self.cfg.trainer.compile:
            info(f"torch.compile: {fast_paths.compile_layers(model)} decoder layers (compiled at the first step)")
        return model

    # ── data stages ────────────────────────────────────────────────────────────────────────────────
    def detect_format(self, row: dict, where: str) -> str:
        """data.format, or the format whose columns `row` has (printed either way)."""
        c = self.cfg.data
        if c.format != "auto":
            info(f"data format: {c.format} (data.format)")
            return c.format
        fmt = formats.detect(row.keys(), c.columns, where)
        info(f"data format: {fmt} (detected from the columns {', '.join(map(str, row))}; set data.format to fix it)")
        return fmt

    def to_conversation(self, row: dict, where: str):
        """One data row to what the method learns from: a list of {role, content} messages (chat formats), a text
        document (text), a preference.Pair (preference) or a preference.Judged (kto). The first row settles the
        format (tokenize_data checks it suits method.name; evaluation takes any)."""
        c = self.cfg.data
        if self.data_format is None:
            self.data_format = self.detect_format(row, where)
        if self.data_format == "text":
            return text.document(row, where, c.columns)
        if self.data_format == "preference":
            return preference.to_pair(row, where, c.columns, c.system_prompt)
        if self.data_format == "kto":
            return preference.to_judged(row, where, c.columns, c.system_prompt)
        return formats.to_messages(row, where, self.data_format, c.columns, c.system_prompt)

    def apply_chat_template(self, conversation, where: str = "conversation"):
        """to_conversation's result to tokens: input_ids + labels (data.train_on) of messages, None if truncation left
        nothing to learn; the blocks of a text document; a pair's or a KTO row's scored answers."""
        c = self.cfg.data
        if isinstance(conversation, str):
            return text.tokenize_document(self.tokenizer, conversation, c.max_seq_len)
        if isinstance(conversation, preference.Pair):
            return preference.tokenize_pair(self.tokenizer, conversation, c.max_seq_len, where)
        if isinstance(conversation, preference.Judged):
            return preference.tokenize_judged(self.tokenizer, conversation, c.max_seq_len, where)
        return chat.tokenize_conversation(self.tokenizer, conversation, c.max_seq_len, where, c.train_on)

    def prompt_ids(self, messages: List[dict], where: str = "prompt") -> tuple:
        """(text, token ids) of the prompt for the next assistant turn after `messages`, tokenized as
        apply_chat_template tokenizes the same text in training; override the two together."""
        return chat.prompt_ids(self.tokenizer, messages, where, self.cfg.data.train_on)

    def read_splits(self, data: sources.Source, problems: sources.Problems) -> dict:
        """{split: [(where, row)]}: the source's own splits, validation and test carved from train (seeded).
        The first row goes through to_conversation first, so data in no known format is reported as that
        rather than as a split too small to carve."""
        named = data.read(problems)
        if named.get("train"):
            where, row = named["train"][0]
            try:
                self.to_conversation(row, where)
            except ConfigError:
                raise
            except FtlabError:  # a bad first row: reported (or skipped) with the others when it is tokenized
                pass
        c = self.cfg.data
        return sources.assign_splits(named, c.val_size, c.test_size, self.cfg.seed)

    def tokenize_data(self) -> splits.Prepared:
        """Read, check and tokenize every split, or load the result from the preprocessing cache."""
        c = self.cfg.data
        data = sources.open_source(c)
        stages = [self.read_splits, self.detect_format, self.to_conversation, self.apply_chat_template]
        key = cache.key(c, self.cfg.seed, data.fingerprint, self.tokenizer, stages)
        entry = cache.entry(self.cfg.cache_dir, key) if c.cache else None
        prepared = cache.load(entry) if entry else None
        self.stats["data_fingerprint"] = data.fingerprint  # evaluation later checks the data is unchanged
        if prepared is not None:
            info(f"tokenized data: from the cache ({entry}); nothing re-read")
            if prepared.format:
                info(f"data format: {prepared.format}")
            formats.check_method(prepared.format, self.cfg.method.name)
            self.data_format = prepared.format
            return prepared
        problems = sources.Problems(skip=c.skip_bad_rows)
        rows = self.read_splits(data, problems)
        if self.data_format is not None:  # settled by the first row; training needs data its method learns from
            formats.check_method(self.data_format, self.cfg.method.name)
        tokenized = splits.tokenize_splits(rows, self.to_conversation, self.apply_chat_template, problems)
        prepared = splits.Prepared(self.data_format, tokenized, problems.reasons)
        splits.check_not_empty(prepared, c.max_seq_len)
        if entry:
            cache.save(entry, prepared)
        return prepared

    def prepare_data(self) -> ChatDataModule:
        """Tokenized splits (tokenize_data) into training rows, packed if asked, served by a LightningDataModule."""
        c = self.cfg.data
        self.prepared = self.tokenize_data()
        if self.cfg.eval.after_train and self.data_format == "text":  # known now, not after a whole fit
            raise ConfigError(TEXT_HAS_NO_ANSWERS)
        split = self.cfg.eval.split
        if self.cfg.eval.after_train and not self.prepared.splits.get(split, splits.Split()).items:
            raise FtlabError(
                f"eval.after_train=true scores the {split} split, and this data has no {split} rows; "
                f"{scoring.split_fix(split)}"
            )
        train = self.prepared.splits["train"].items
        rows = self.train_rows = batching.pack(train, c.max_seq_len) if c.packing else train
        self.stats.update(splits.describe(self.prepared, rows, c, self.cfg.seed))
        return ChatDataModule(
            rows,
            self.prepared.splits["validation"].items,
            batch_size=c.batch_size,
            accumulate=self.cfg.trainer.accumulate_grad_batches,
            pad_id=self.tokenizer.pad_token_id,
            seed=self.cfg.seed,
            num_workers=c.num_workers,
            group_by_length=c.group_by_length,
        )

    def evaluation_examples(self) -> tuple:
        """([scoring.Example], data fingerprint) of eval.split, the first eval.max_examples of them, made by this
        recipe's stages: to_conversation, the last assistant turn as the reference, prompt_ids and
        apply_chat_template. Needs the tokenizer."""
        c, split = self.cfg.data, self.cfg.eval.split
        data = sources.open_source(c)
        problems = sources.Problems(skip=c.skip_bad_rows)
        rows = self.read_splits(data, problems).get(split) or []
        if not rows:
            raise FtlabError(
                f"eval.split={split}: the data ({data.label}) has no {split} rows; "
                f"{scoring.split_fix(split)} (a new split needs a new training run, which holds it out)"
            )
        examples = []
        for where, row in rows[: self.cfg.eval.max_examples or None]:
            try:
                conversation = self.to_conversation(row, where)
                messages, pair = self._reference_conversation(conversation, where)
                if messages is None:  # a KTO row's undesirable completion: no reference to score against
                    continue
                if messages[-1]["role"] != "assistant":
                    raise FtlabError(
                        f"{where}: the conversation ends with a {messages[-1]['role']} turn, so there "
                        "is no reference answer to score against"
                    )
                prompt = prompts.split_reference(messages, where)
                text, ids = self.prompt_ids(prompt.messages, where)
            except ConfigError:  # not the row's fault: skipping cannot help
                raise
            except FtlabError as e:
                problems.report(str(e))
                continue
            tokens = self.apply_chat_template(messages, where)
            examples.append(scoring.Example(prompt, text, ids, tokens, pair))
        return examples, data.fingerprint

    def _reference_conversation(self, conversation, where: str) -> tuple:
        """(messages whose last assistant turn is the reference, the tokenized pair or None) of to_conversation's
        result: a preference row's reference is its chosen answer, a KTO row's its desirable completion (None for
        an undesirable one)."""
        if isinstance(conversation, preference.Pair):
            pair = self.apply_chat_template(conversation, where)
            return conversation.prompt + conversation.chosen, pair
        if isinstance(conversation, preference.Judged):
            return (conversation.prompt + conversation.completion if conversation.desirable else None), None
        if isinstance(conversation, str):
            raise ConfigError(TEXT_HAS_NO_ANSWERS)
        return conversation, None

    # ── training stages ────────────────────────────────────────────────────────────────────────────
    def check_packing(self) -> None:
        """Packed rows are only sound if this model's attention restarts at every example; test it on the model."""
        if self.attention == "flash_attention_2":  # its kernels need the GPU the model isn't on yet
            info("packing: flash-attention runs each packed example as its own sequence (variable-length kernel)")
            return
        ok, leak, diff = batching.attention_stays_inside(self.model)
        if not ok:
            raise FtlabError(
                f"data.packing=true: {self.cfg.model.name} with attention "
                f"{self.attention} lets packed examples attend to each other "
                f"(logits moved by {diff:.2g}); set data.packing=false"
            )
        info(
            f"packing: attention stays inside each example (checked on this model: logits moved by "
            f"{diff:.1g} vs {leak:.1g} across a boundary)"
        )

    def callbacks(self) -> list:
        """Lightning callbacks of a run; extend in a subclass to add your own."""
        self.throughput = callbacks.Throughput()
        saver = ModelCheckpoint(
            dirpath=self.run_dir / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=self.cfg.trainer.checkpoint_every_n_steps,
            save_on_train_epoch_end=False,
        )
        checkpoint = self.run_dir / rundir.CHECKPOINT
        hint = callbacks.ResumeHint(self.run_dir, checkpoint)
        stop = Preemption(self.run_dir, checkpoint)
        self.pruning = Pruning.for_trial(self.trial)
        return [saver, self.throughput, callbacks.Telemetry(), callbacks.ProgressBar(refresh_rate=1), hint, stop] + (
            [self.pruning] if self.pruning else []
        )

    def make_module(self) -> LoRAModule:
        """The LightningModule of method.name: module_class for SFT, PreferenceModule for the preference methods."""
        c = self.cfg
        optim = dict(
            lr=c.optim.lr,
            weight_decay=c.optim.weight_decay,
            betas=c.optim.betas,
            optimizer=c.optim.name,
            scheduler=c.optim.scheduler,
            warmup_steps=c.optim.warmup_steps,
            min_lr_ratio=c.optim.min_lr_ratio,
        )
        if c.method.name == "sft":
            return self.module_class(self.model, fused_loss=c.model.liger_kernels, **optim)
        m = c.method
        return PreferenceModule(
            self.model,
            method=m.name,
            loss=m.loss,
            beta=m.beta,
            label_smoothing=m.label_smoothing,
            odds_ratio_weight=m.odds_ratio_weight,
            gamma=m.gamma,
            desirable_weight=m.desirable_weight,
            undesirable_weight=m.undesirable_weight,
            **optim,
        )

    def train(self) -> dict:
        c, t = self.cfg, self.cfg.trainer
        module = self.make_module()
        self.trainer = fit.make_trainer(
            t,
            self.precision,
            self.run_dir,
            self.trackers.start(),
            self.callbacks(),
            strategy.make_strategy(t, self.model),
        )
        effective = c.data.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes
        info(
            f"effective batch size: {effective} = {c.data.batch_size} (data.batch_size) x "
            f"{t.accumulate_grad_batches} (accumulation) x {t.devices} (devices) x {t.num_nodes} (nodes); "
            f"~{effective * self.stats['tokens_per_row']:.0f} tokens per step"
        )
        dm = self.datamodule
        before = fit.validation_metrics(self.trainer, module, dm)
        info(f"validation loss before training: {fit.describe(before)}")
        ckpt = self._resume_checkpoint()
        epoch, done = checkpoints.position(ckpt) if ckpt else (0, 0)
        module.train()  # from_pretrained and validate() leave eval mode on, which would switch dropout off
        started = time.perf_counter()
        self.trainer.fit(
            module,
            train_dataloaders=dm.train_dataloader(epoch, done),
            val_dataloaders=dm.val_dataloader() if t.val_every_n_steps > 0 else None,
            ckpt_path=ckpt,
        )
        seconds = time.perf_counter() - started
        after = fit.validation_metrics(self.trainer, module, dm)
        self.adapter_weights = strategy.adapter_state_dict(self.trainer)  # FSDP: every rank gathers
        peak = callbacks.peak_memory_gb(module.device)
        self.stats["peak_memory_gb_per_rank"] = [round(x, 3) for x in strategy.per_rank(self.trainer, peak)]
        info(f"validation loss after training:  {fit.describe(after, before)}")
        self.stats.update(
            **{f"val_{k}_before": v for k, v in before.items()},
            **{f"val_{k}_after": v for k, v in after.items()},
            **fit.stats(self.trainer, self.throughput, seconds),
            resumed_from=str(ckpt) if ckpt else None,
            pruned_at_step=self.pruning.pruned_at if self.pruning else None,
        )
        return self.stats

    def save(self) -> None:
        adapter_dir = self.run_dir / "adapter"
        self.model.save_pretrained(adapter_dir, state_dict=self.adapter_weights)
        # saved beside the adapter with its chat template, so inference renders prompts exactly as training did
        self.tokenizer.save_pretrained(adapter_dir)
        self.stats.update(
            versions=rundir.versions(),
            git_commit=rundir.git_commit(),
            model=self.cfg.model.name,
            wall_seconds=round(time.perf_counter() - self._t0, 2),
        )
        write_json(self.run_dir / "metrics.json", self.stats)
        plots.plot_losses(self.run_dir)

    def evaluate(self) -> dict:
        """Score the tuned model and its base on eval.split into <run dir>/eval; the numbers join metrics.json and
        the trackers as eval_* and base_eval_*."""
        examples, fingerprint = self.evaluation_examples()
        info(f"{len(examples)} examples from the {self.cfg.eval.split} split")
        self.model.eval()
        self.model.config.use_cache = True  # generation needs the KV cache training switched off
        doc = scoring.evaluate(
            self.model,
            self.tokenizer,
            examples,
            self.cfg,
            self.run_dir / "eval",
            str(self.run_dir),
            fingerprint,
            adapter=True,
        )
        log.info(report.table(doc))
        self.stats.update(report.flat(doc))
        write_json(self.run_dir / "metrics.json", self.stats)
        return doc

    # ── a finished run, for the commands that use one ────────────────────────────────────────────────
    def load_trained_tokenizer(self, adapter_dir: Optional[Path]):
        """The tokenizer saved beside the adapter (with the chat template training used), else the base's."""
        saved = adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file()
        self.tokenizer = self.load_tokenizer(str(adapter_dir) if saved else self.model_source())
        return self.tokenizer

    def load_trained(self, adapter_dir: Optional[Path], base_only: bool = False):
        """A finished run's model in eval mode: the base loaded (and quantized) as in training, with the adapter
        on top unless `base_only` or there is none."""
        source_dir = self.model_source()
        base = self.load_base_model(source_dir)
        base.config.use_cache = True  # training switched the KV cache off; generation needs it
        device = load.device_for(self.cfg.trainer.accelerator)
        if self.cfg.quant.bits is None and device != "cpu":  # bitsandbytes placed a quantized base already
            base.to(device)
        self.model = base.eval() if adapter_dir is None or base_only else adapter.load(base, adapter_dir, source_dir)
        return self.model

    # ── services ─────────────────────────────────────────────────────────────────────────────────────
    def check_access(self) -> None:
        """Reach the trackers and, when pushing, the Hub now: a wrong URI or token fails in seconds."""
        model = None
        if self.cfg.tracker.name in ("mlflow", "all") and self.cfg.tracker.mlflow.log_model:
            from ftlab.train.pyfunc import ChatAdapter  # mlflow takes seconds to import; only its users pay

            model = ChatAdapter(type(self))
        self.trackers = tracking.Trackers(
            self.cfg, self.run_dir, trial=self.trial, mlflow_model=model, enabled=self.main
        )
        self.trackers.check()
        if self.cfg.hub.push and self.main:
            h = self.cfg.hub
            info(
                push.preflight(
                    h.repo_id, os.environ.get("HF_TOKEN"), retries=h.retries, retry_wait=h.retry_wait, log=info
                )
            )

    def write_card(self) -> Path:
        command = self.command or f"python -m ftlab --rerun {self.run_dir}"
        return card.write(self.run_dir, self.cfg, self.stats, secrets.redact(command))

    def publish(self) -> str:
        h = self.cfg.hub
        url = push.push(
            self.run_dir,
            h.repo_id,
            private=h.private,
            token=os.environ.get("HF_TOKEN"),
            retries=h.retries,
            retry_wait=h.retry_wait,
            log=info,
        )
        self.stats["hub_url"] = url
        return url

    # ── the pipeline ───────────────────────────────────────────────────────────────────────────────
    def run(self) -> dict:
        self._t0 = time.perf_counter()
        self.run_dir = self.run_dir or new_run_dir()
        if self.main:  # the other ranks share the dir rank 0 claimed (cli.py, distributed.py)
            rundir.claim_run_dir(self.run_dir)
        try:
            return self._run()
        except Exception:
            if self.main:
                rundir.discard_unfinished(self.run_dir)  # a run that failed before results leaves nothing
            raise
        finally:
            if self.trackers is not None and self.trackers.open:  # ended by an error or Ctrl+C
                # Lightning turns Ctrl+C during fit into sys.exit(1), after its own clean shutdown
                stopped = isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))
                self.trackers.finish(self.stats, "KILLED" if stopped else "FAILED")

    def _run(self) -> dict:
        if self.main:
            self._save_config()
        setup_logging(self.run_dir if self.main else None)
        if not self.main:
            log.setLevel(logging.WARNING)  # stage lines and numbers are rank 0's to print
        L.seed_everything(self.cfg.seed, workers=True, verbose=False)
        log.info(f"ftlab run dir: {self.run_dir}")
        self.stages.start("Checking model source and access", self.cfg.model.name)
        source_dir = self.model_source()
        self.check_access()
        self.stages.start("Loading tokenizer and data", str(self.cfg.data.path or self.cfg.data.name))
        self.tokenizer = self.load_tokenizer(source_dir)
        self.datamodule = self.prepare_data()
        self.stages.start("Loading base model", load.describe_quant(self.cfg.quant, self.precision))
        info(f"precision: {self.precision} ({self._precision_why})")
        self.stats["precision"] = self.precision
        self.choose_attention(self.train_rows)
        base = self.load_base_model(source_dir)
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
        if not self.main:  # training, and the collectives in it, were the other ranks' part
            return self.stats
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
            write_json(self.run_dir / "metrics.json", self.stats)  # now with hub_url
        self.stages.finish()
        log.info(f"ftlab: done; adapter in {self.run_dir / 'adapter'}")
        return self.stats

    def _save_config(self) -> None:
        """CLI runs get .hydra/ from Hydra; API runs write the same config.yaml, so both re-run alike."""
        saved = self.run_dir / ".hydra" / "config.yaml"
        if not saved.exists():
            write_text(saved, OmegaConf.to_yaml(self.cfg))

    def _resume_checkpoint(self) -> Optional[Path]:
        if self.cfg.resume is None:
            return None
        found = rundir.resume_checkpoint(self.cfg.resume)
        info(f"resuming from {found}")
        return found
