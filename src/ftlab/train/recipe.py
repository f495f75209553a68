"""FineTune: the whole pipeline as one recipe, one public method per stage, for every command and for notebooks.

    result = FineTune(compose(["model=tiny", "trainer.max_steps=2"])).run()
    result["val_loss_after"], result.run_dir, result.model

run() reads top to bottom: checks (model source, trackers, Hub access) ▶ tokenizer + data ▶ base model ▶ LoRA
▶ Lightning fit ▶ artifacts (and trackers) ▶ evaluation ▶ Hub upload. Data comes before the base model on purpose:
a bad data file fails in a second, not after a long load; trackers and Hub access are checked before both.

Each stage takes what it needs and returns what it made; nothing is left on the recipe for a later stage to find,
so a subclass that overrides one stage (say `to_conversation`, for a row format of its own) changes that stage
and nothing else, in every command: training and `ftlab.preview` tokenize with to_conversation and
apply_chat_template; evaluation builds its examples with the same two (evaluation_examples); inference,
evaluation and export load a finished run with load_trained_tokenizer / load_trained (train/trained.py) and render
prompts with prompt_ids.
"""

import contextlib
import copy
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ftlab.config.checks import validate
from ftlab.config.compose import setup
from ftlab.data import batching, cache, chat, formats, mix, rows, sources, splits, templates
from ftlab.data.datamodule import ChatDataModule
from ftlab.data.formats import FORMATS, Format
from ftlab.data.kinds import KINDS
from ftlab.hub import card, push
from ftlab.methods import METHODS
from ftlab.model import adapter, fast_paths, load, source
from ftlab.sweeps.env import TrialEnv
from ftlab.sweeps.trial import Pruning
from ftlab.tracking import mlflow_backend
from ftlab.tracking.trackers import Trackers
from ftlab.train import callbacks, checkpoints, fit, plots, rundir, strategy
from ftlab.train.module import LoRAModule
from ftlab.train.preemption import Preemption
from ftlab.use import harness, prompts, report, scoring
from ftlab.utils import ranks, secrets
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.errors import ConfigError, FtlabError
from ftlab.utils.files import new_run_dir, write_json, write_text


@dataclass
class TrainingData:
    """What prepare_data made: the tokenized splits, the rows training batches (packed with data.packing), the
    LightningDataModule serving them, the numbers describing them (for metrics.json), and with data.sources what
    each source gave (data_mix.json)."""

    prepared: splits.Prepared
    rows: List[dict]
    datamodule: ChatDataModule
    stats: dict
    mix: Optional[dict] = None


class Result(dict):
    """What run() returns: the run's numbers, as metrics.json holds them (a sweep reads its objective here), with
    the run dir, the trained model and its tokenizer, and the data it trained on."""

    def __init__(self, stats: dict, run_dir: Path, model, tokenizer, data: Optional[TrainingData]):
        super().__init__(stats)
        self.run_dir, self.model, self.tokenizer, self.data = run_dir, model, tokenizer, data


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
        self.run_dir = Path(run_dir) if run_dir is not None else None  # None: run() makes outputs/DATE/TIME
        self.command = command  # what the user typed, for the model card; None: the --rerun command
        self.method = METHODS.get(self.cfg.method.name)
        self.trial = TrialEnv.from_environment()  # set when this run is a trial of an Optuna sweep
        # every rank of a multi-process job runs this recipe; rank 0 alone prints, writes files and reports
        self.main = ranks.is_main()
        self.precision, self.precision_why = load.resolve_precision(
            self.cfg.trainer.precision, self.cfg.trainer.accelerator
        )
        self.on_gpu = load.device_for(self.cfg.trainer.accelerator) == "cuda"

    # ── model stages ───────────────────────────────────────────────────────────────────────────────
    def model_source(self) -> str:
        return source.resolve_source(self.cfg.model, self.cfg.cache_dir, self.cfg.seed)

    def load_tokenizer(self, source_dir, gguf_file=None):
        """The model's tokenizer with the chat template training (and later inference) renders with."""
        tokenizer = load.load_tokenizer(source_dir, self.cfg.model, gguf_file)
        templates.apply(tokenizer, self.cfg.data.chat_template, self.cfg.model.name)
        return tokenizer

    def load_base_model(self, source_dir: str, attention: Optional[str] = None):
        """`attention`: the implementation choose_attention settled; None: model.attn_implementation for this
        device alone."""
        m, t = self.cfg.model, self.cfg.trainer
        attention = attention or fast_paths.resolve_attention(m.attn_implementation, self.on_gpu)[0]
        sharded = t.strategy == "fsdp"
        return load.load_base_model(source_dir, m, self.cfg.quant, t.accelerator, self.precision, attention, sharded)

    def load_base_model_and_tokenizer(self) -> tuple:
        source_dir = self.model_source()
        return self.load_base_model(source_dir), self.load_tokenizer(source_dir)

    def choose_attention(self, rows: List[dict], kind) -> str:
        """model.attn_implementation with auto settled for this device and these training rows (printed)."""
        longest = max((max(kind.rows(r)) for r in rows), default=0)
        attention, why = fast_paths.resolve_attention(self.cfg.model.attn_implementation, self.on_gpu, longest)
        info(f"attention: {attention} ({why})")
        return attention

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
    def data_format(self, row: dict, where: str) -> Optional[Format]:
        """data.format, or the format whose columns `row` has (printed either way); None when none has them (the
        default to_conversation then says so; a subclass reading rows of its own needs none)."""
        c = self.cfg.data
        if c.format != "auto":
            info(f"data format: {c.format} (data.format)")
            return FORMATS.get(c.format)
        try:
            found = formats.detect(row, c.columns, where)
        except ConfigError:
            return None
        columns = ", ".join(map(str, row))
        info(f"data format: {found.name} (detected from the columns {columns}; set data.format to fix it)")
        return found

    def to_conversation(self, row: dict, where: str, fmt: Optional[Format]):
        """One data row to what its format tokenizes: a list of {role, content} messages (chat formats), a text
        document (text), a preference pair (preference), a judged answer (kto). `fmt`: the data's format
        (data_format); None: detected from this row's columns, or ConfigError naming them."""
        fmt = fmt or formats.detect(row, self.cfg.data.columns, where)
        return fmt.parse(row, where, self.cfg.data)

    def apply_chat_template(self, tokenizer, conversation, where: str, fmt: Optional[Format]):
        """to_conversation's result to tokens, an example of the format's kind: input_ids + labels (data.train_on)
        of messages, None if truncation left nothing to learn; the blocks of a text document; a pair's or a KTO
        row's scored answers. `fmt` None (a subclass's own rows): the first format of the method's kind."""
        fmt = fmt or formats.of_kind(self.method.kind)[0]
        if self.adopted(fmt):  # chat rows read as prompts by an online method
            return KINDS.get(self.method.kind).adopt(tokenizer, conversation, self.cfg.data.max_seq_len, where)
        return fmt.tokenize(tokenizer, conversation, self.cfg.data, where)

    def adopted(self, fmt: Format) -> bool:
        """Rows of `fmt` become examples of the method's kind, not the format's own (chat rows as prompts)."""
        return fmt.kind != self.method.kind and KINDS.get(self.method.kind).adopts(fmt)

    def example_kind(self, fmt: Optional[Format]) -> str:
        """The kind of example rows of `fmt` become: the format's own, or the method's where it adopts them or the
        rows are a subclass's own (`fmt` None)."""
        return fmt.kind if fmt is not None and not self.adopted(fmt) else self.method.kind

    def prompt_ids(self, tokenizer, messages: List[dict], where: str = "prompt") -> tuple:
        """(text, token ids) of the prompt for the next assistant turn after `messages`, tokenized as
        apply_chat_template tokenizes the same text in training; override the two together."""
        return chat.prompt_ids(tokenizer, messages, where, self.cfg.data.train_on)

    def read_splits(self, data: sources.Source, problems: sources.Problems) -> tuple:
        """({split: [(where, row)]}, the data format): the source's own splits, validation and test carved from train
        (seeded), and the format the first training row settles. That row goes through to_conversation first, so
        data in no known format is reported as that rather than as a split too small to carve."""
        named = data.read(problems)
        fmt = None
        if named.get("train"):
            where, row = named["train"][0]
            fmt = self.data_format(row, where)
            try:
                self.to_conversation(row, where, fmt)
            except ConfigError:
                raise
            except FtlabError:  # a bad first row: reported (or skipped) with the others when it is tokenized
                pass
        c = self.cfg.data
        return sources.assign_splits(named, c.val_size, c.test_size, self.cfg.seed), fmt

    def for_source(self, index: int) -> "FineTune":
        """This recipe reading data.sources[index] alone: the same stages, with data.* that source's options (those
        it leaves null are the run's), so each source is read, split, checked, tokenized and cached on its own."""
        view = copy.copy(self)
        view.cfg = mix.source_config(self.cfg, index)
        return view

    def tokenize_data(self, tokenizer) -> splits.Prepared:
        """Read, check and tokenize every split, or load the result from the preprocessing cache. With data.sources,
        each source so (for_source), then the training examples drawn from them by data.mix: a mix.Mixed."""
        c = self.cfg.data
        if c.sources:
            parts = []
            for i, (source, label) in enumerate(zip(c.sources, rows.labels(c.sources))):
                info(f"source {label} (data.sources.{i}): {source.path or source.name}")
                with mix.naming(c.sources, i):
                    parts.append(mix.Part(label, self.for_source(i).tokenize_data(tokenizer), source.weight))
            return mix.combine(parts, c.mix, c.mix_size, self.cfg.seed)
        data = sources.open_source(c)
        stages = [self.read_splits, self.data_format, self.to_conversation, self.apply_chat_template]
        key = cache.key(c, self.cfg.seed, data.fingerprint, tokenizer, stages + list(FORMATS), self.method.kind)
        entry = cache.entry(self.cfg.cache_dir, key) if c.cache else None
        prepared = cache.load(entry) if entry else None
        if prepared is not None:
            info(f"tokenized data: from the cache ({entry}); nothing re-read")
            if prepared.format:
                info(f"data format: {prepared.format}")
                self.check_data(FORMATS.get(prepared.format))
            return dataclasses.replace(prepared, fingerprint=data.fingerprint)
        problems = sources.Problems(skip=c.skip_bad_rows)
        named, fmt = self.read_splits(data, problems)
        if fmt is not None:  # settled by the first row; training needs data its method learns from
            self.check_data(fmt)

        def tokenize(row: dict, where: str):
            return self.apply_chat_template(tokenizer, self.to_conversation(row, where, fmt), where, fmt)

        tokenized = splits.tokenize_splits(named, tokenize, problems)
        prepared = splits.Prepared(
            fmt.name if fmt else None,
            self.example_kind(fmt),
            tokenized,
            problems.reasons,
            data.fingerprint,
            rows_read=sum(map(len, named.values())),
        )
        splits.check_not_empty(prepared, c.max_seq_len)
        if entry:
            cache.save(entry, prepared)
        return prepared

    def check_data(self, fmt: Format) -> None:
        """Refuse data of a kind the method does not train on, naming what it needs and a method that takes it."""
        if fmt.kind == self.method.kind:
            return
        if self.adopted(fmt):
            info(f"method={self.method.name}: the {fmt.name} rows' last assistant turn is each prompt's reference")
            return
        needs = _needs(self.method.kind)
        other = next(m.name for m in METHODS if m.kind == fmt.kind)
        raise ConfigError(
            f"method={self.method.name} trains on {needs}, and this data is in the {fmt.name} format; map the "
            f"columns with data.columns.*, or train it with method={other}"
        )

    def prepare_data(self, tokenizer) -> TrainingData:
        """Tokenized splits (tokenize_data) into training rows, packed if asked, served by a LightningDataModule;
        with data.sources, one validation set per source."""
        c = self.cfg.data
        prepared = self.tokenize_data(tokenizer)
        parts = prepared.parts if isinstance(prepared, mix.Mixed) else [mix.Part(rows.data_label(c), prepared, 1.0)]
        for i, part in enumerate(parts):
            with mix.naming(c.sources, i) if c.sources else contextlib.nullcontext():
                fmt = FORMATS.get(part.prepared.format) if part.prepared.format else None
                if self.cfg.eval.after_train and fmt is not None and fmt.no_answers:  # known now, not after a fit
                    raise ConfigError(fmt.no_answers)
                self.method.check_data(self.cfg.method, part.prepared.splits["train"].items, part.label)
        split = self.cfg.eval.split
        if self.cfg.eval.after_train and not prepared.splits.get(split, splits.Split()).items:
            raise FtlabError(
                f"eval.after_train=true scores the {split} split, and this data has no {split} rows; "
                f"{scoring.split_fix(split)}"
            )
        train = prepared.splits["train"].items
        batched = batching.pack(train, c.max_seq_len) if c.packing else train
        drawn = mix.report(prepared, c.mix, c.mix_size, self.cfg.seed) if isinstance(prepared, mix.Mixed) else None
        stats = {**splits.describe(prepared, batched, c, self.cfg.seed), "data_fingerprint": prepared.fingerprint}
        datamodule = ChatDataModule(
            batched,
            prepared.splits["validation"].items,
            val_sizes=prepared.validation_sizes if drawn else None,
            kind=prepared.examples,
            per_example=self.method.per_example,
            batch_size=c.batch_size,
            accumulate=self.cfg.trainer.accumulate_grad_batches,
            pad_id=tokenizer.pad_token_id,
            seed=self.cfg.seed,
            num_workers=c.num_workers,
            group_by_length=c.group_by_length,
            passes=self.method.passes(self.cfg.method),
        )
        return TrainingData(prepared, batched, datamodule, stats, drawn)

    def evaluation_examples(self, tokenizer) -> tuple:
        """([scoring.Example], data fingerprint) of eval.split, the first eval.max_examples of them, made by this
        recipe's stages: to_conversation, the format's reference answer, prompt_ids and apply_chat_template. With
        data.sources, each source's split in turn, read with its own options (for_source)."""
        c, split, limit = self.cfg.data, self.cfg.eval.split, self.cfg.eval.max_examples or None
        labels = rows.labels(c.sources) or [rows.data_label(c)]
        views = [self.for_source(i) for i in range(len(c.sources))] or [self]
        examples, fingerprints, opened, found = [], [], [], 0
        for i, (view, label) in enumerate(zip(views, labels)):
            with mix.naming(c.sources, i) if c.sources else contextlib.nullcontext():
                data = sources.open_source(view.cfg.data)
                problems = sources.Problems(skip=c.skip_bad_rows)
                named, fmt = view.read_splits(data, problems)
                held = (named.get(split) or [])[: None if limit is None else max(limit - found, 0)]
                found += len(held)
                if held and fmt is not None and fmt.no_answers:
                    raise ConfigError(fmt.no_answers)
                examples += view.held_out_examples(tokenizer, held, fmt, problems)
            fingerprints.append((label, data.fingerprint))
            opened.append(data.label)
        if not found:
            raise FtlabError(
                f"eval.split={split}: the data ({', '.join(opened)}) has no {split} rows; "
                f"{scoring.split_fix(split)} (a new split needs a new training run, which holds it out)"
            )
        return examples, mix.fingerprint(fingerprints) if c.sources else fingerprints[0][1]

    def held_out_examples(self, tokenizer, held: List[tuple], fmt: Optional[Format], problems) -> list:
        """[scoring.Example] of held-out (where, row) pairs in the format `fmt`, for evaluation_examples."""
        c = self.cfg.data
        examples = []
        for where, row in held:
            try:
                conversation = self.to_conversation(row, where, fmt)
                messages = fmt.reference(conversation, where) if fmt is not None else conversation
                if messages is None:  # a KTO row's undesirable completion: no reference to score against
                    continue
                if messages[-1]["role"] != "assistant":
                    raise FtlabError(
                        f"{where}: the conversation ends with a {messages[-1]['role']} turn, so there "
                        "is no reference answer to score against"
                    )
                prompt = prompts.split_reference(messages, where)
                text, ids = self.prompt_ids(tokenizer, prompt.messages, where)
                # a row whose kind adds scores (a pair's preference accuracy) brings its example, as training scores it
                # and a method that samples (GRPO) scores the answers with its own measure (its rewards)
                example, kind = None, fmt.kind if fmt is not None else "tokens"
                if fmt is not None and (KINDS.get(fmt.kind).reported or self.method.samples):
                    example = self.apply_chat_template(tokenizer, conversation, where, fmt)
                    kind = self.example_kind(fmt)
            except ConfigError:  # not the row's fault: skipping cannot help
                raise
            except FtlabError as e:
                problems.report(str(e))
                continue
            tokens = chat.tokenize_conversation(tokenizer, messages, c.max_seq_len, where, c.train_on)
            examples.append(scoring.Example(prompt, text, ids, tokens, kind, example))
        return examples

    # ── training stages ────────────────────────────────────────────────────────────────────────────
    def check_packing(self, model, attention: str) -> None:
        """Packed rows are only sound if this model's attention restarts at every example; test it on the model."""
        if attention == "flash_attention_2":  # its kernels need the GPU the model isn't on yet
            info("packing: flash-attention runs each packed example as its own sequence (variable-length kernel)")
            return
        ok, leak, diff = batching.attention_stays_inside(model)
        if not ok:
            raise FtlabError(
                f"data.packing=true: {self.cfg.model.name} with attention {attention} lets packed examples attend to "
                f"each other (logits moved by {diff:.2g}); set data.packing=false"
            )
        info(
            f"packing: attention stays inside each example (checked on this model: logits moved by "
            f"{diff:.1g} vs {leak:.1g} across a boundary)"
        )

    def callbacks(self, run_dir: Path) -> list:
        """Lightning callbacks of a run; extend in a subclass to add your own. train() finds the Throughput and
        Pruning ones among them for the numbers they keep."""
        saver = ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=self.cfg.trainer.checkpoint_every_n_steps,
            save_on_train_epoch_end=False,
        )
        checkpoint = run_dir / rundir.CHECKPOINT
        hint = callbacks.ResumeHint(run_dir, checkpoint)
        stop = Preemption(run_dir, checkpoint)
        pruning = Pruning.for_trial(self.trial)
        progress = callbacks.ProgressBar(refresh_rate=1)
        failed = callbacks.CheckpointOnStepError(run_dir, checkpoint)
        return [saver, callbacks.Throughput(), callbacks.Telemetry(), progress, hint, stop, failed] + (
            [pruning] if pruning else []
        )

    def make_module(self, model, tokenizer) -> LoRAModule:
        """The LightningModule of the PEFT model, trained by method.name (methods/); an online method samples with
        `tokenizer`; with several data.sources it validates each apart too (val/loss_<label>)."""
        o = self.cfg.optim
        return self.module_class(
            model,
            self.method,
            self.cfg.method,
            lr=o.lr,
            weight_decay=o.weight_decay,
            betas=o.betas,
            optimizer=o.name,
            scheduler=o.scheduler,
            warmup_steps=o.warmup_steps,
            min_lr_ratio=o.min_lr_ratio,
            fused_loss=self.cfg.model.liger_kernels and self.method.fused_loss,
            tokenizer=tokenizer,
            seed=self.cfg.seed,
            val_sources=rows.labels(self.cfg.data.sources) if len(self.cfg.data.sources) > 1 else [],
        )

    def train(self, model, tokenizer, data: TrainingData, run_dir: Path, loggers: list) -> tuple:
        """Fit the model on the data: (the fit's numbers for metrics.json, the adapter's weights where the
        strategy gathered them: FSDP)."""
        c, t = self.cfg, self.cfg.trainer
        module = self.make_module(model, tokenizer)
        run_callbacks = self.callbacks(run_dir)
        trainer = fit.make_trainer(t, self.precision, run_dir, loggers, run_callbacks, strategy.make_strategy(t, model))
        throughput = next(cb for cb in run_callbacks if isinstance(cb, callbacks.Throughput))
        pruning = next((cb for cb in run_callbacks if isinstance(cb, Pruning)), None)
        effective = c.data.batch_size * t.accumulate_grad_batches * t.devices * t.num_nodes
        info(
            f"effective batch size: {effective} = {c.data.batch_size} (data.batch_size) x "
            f"{t.accumulate_grad_batches} (accumulation) x {t.devices} (devices) x {t.num_nodes} (nodes); "
            f"~{effective * data.stats['tokens_per_row']:.0f} tokens per step"
        )
        dm = data.datamodule
        before = fit.validation_metrics(trainer, module, dm)
        info(f"validation loss before training: {fit.describe(before, module.logged)}")
        ckpt = self._resume_checkpoint()
        epoch, done = checkpoints.position(ckpt) if ckpt else (0, 0)
        module.train()  # from_pretrained and validate() leave eval mode on, which would switch dropout off
        started = time.perf_counter()
        trainer.fit(
            module,
            train_dataloaders=dm.train_dataloader(epoch, done),
            val_dataloaders=dm.val_dataloader() if t.val_every_n_steps > 0 else None,
            ckpt_path=ckpt,
        )
        seconds = time.perf_counter() - started
        after = fit.validation_metrics(trainer, module, dm)
        weights = strategy.adapter_state_dict(trainer)  # FSDP: every rank gathers
        peak = callbacks.peak_memory_gb(module.device)
        info(f"validation loss after training:  {fit.describe(after, module.logged, before)}")
        stats = dict(
            **{f"val_{k}_before": v for k, v in before.items()},
            **{f"val_{k}_after": v for k, v in after.items()},
            **fit.stats(trainer, throughput, seconds),
            peak_memory_gb_per_rank=[round(x, 3) for x in strategy.per_rank(trainer, peak)],
            resumed_from=str(ckpt) if ckpt else None,
            pruned_at_step=pruning.pruned_at if pruning else None,
        )
        return stats, weights

    def save(self, model, tokenizer, run_dir: Path, stats: dict, weights: Optional[dict] = None) -> None:
        """The adapter and its tokenizer, metrics.json (`stats`) and loss.png into the run dir."""
        adapter_dir = run_dir / "adapter"
        model.save_pretrained(adapter_dir, state_dict=weights)
        # saved beside the adapter with its chat template, so inference renders prompts exactly as training did
        tokenizer.save_pretrained(adapter_dir)
        write_json(run_dir / "metrics.json", stats)
        plots.plot_losses(run_dir)

    def benchmarks(self):
        """harness.tasks, loaded with their data (harness.prepare), when eval.after_train runs them; else None."""
        if not self.cfg.harness.tasks:
            return None
        if not self.cfg.eval.after_train:
            info("note: harness.tasks runs with eval.after_train=true, or later: python -m ftlab.evaluate run=RUN_DIR")
            return None
        return harness.prepare(self.cfg.harness)

    def evaluate(self, model, tokenizer, run_dir: Path, benchmarks=None) -> dict:
        """Score the tuned model and its base on eval.split (and the `benchmarks`) into <run dir>/eval; returns
        the report, whose numbers join metrics.json and the trackers as eval_*, base_eval_* and harness_*."""
        examples, fingerprint = self.evaluation_examples(tokenizer)
        info(f"{len(examples)} examples from the {self.cfg.eval.split} split")
        model.eval()
        model.config.use_cache = True  # generation needs the KV cache training switched off
        doc = scoring.evaluate(
            model, tokenizer, examples, self.cfg, run_dir / "eval", str(run_dir), fingerprint, True, tasks=benchmarks
        )
        log.info(report.table(doc))
        return doc

    # ── a finished run, for the commands that use one (train/trained.py) ─────────────────────────────
    def load_trained_tokenizer(self, adapter_dir: Optional[Path]):
        """The tokenizer saved beside the adapter (with the chat template training used), else the base's."""
        saved = adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file()
        return self.load_tokenizer(str(adapter_dir) if saved else self.model_source())

    def load_trained(self, adapter_dir: Optional[Path], base_only: bool = False):
        """A finished run's model in eval mode: the base loaded (and quantized) as in training, with the adapter
        on top unless `base_only` or there is none."""
        source_dir = self.model_source()
        base = self.load_base_model(source_dir)
        base.config.use_cache = True  # training switched the KV cache off; generation needs it
        device = load.device_for(self.cfg.trainer.accelerator)
        if self.cfg.quant.bits is None and device != "cpu":  # bitsandbytes placed a quantized base already
            base.to(device)
        return base.eval() if adapter_dir is None or base_only else adapter.load(base, adapter_dir, source_dir)

    # ── services ─────────────────────────────────────────────────────────────────────────────────────
    def check_access(self, run_dir: Path) -> Trackers:
        """Reach the trackers and, when pushing, the Hub now: a wrong URI or token fails in seconds. Returns the
        trackers, not started yet."""

        def python_model():  # the run as an MLflow model, for the trackers that keep one
            mlflow_backend.quiet()  # pyfunc imports mlflow, before any client of it would quiet it
            from ftlab.train.pyfunc import ChatAdapter  # mlflow takes seconds to import; only its users pay

            return ChatAdapter(type(self))

        trackers = Trackers(self.cfg, run_dir, trial=self.trial, python_model=python_model, enabled=self.main)
        trackers.check()
        if self.cfg.hub.push and self.main:
            h = self.cfg.hub
            info(
                push.preflight(
                    h.repo_id, os.environ.get("HF_TOKEN"), retries=h.retries, retry_wait=h.retry_wait, log=info
                )
            )
        return trackers

    def write_card(self, run_dir: Path, stats: dict) -> Path:
        command = self.command or f"python -m ftlab --rerun {run_dir}"
        return card.write(run_dir, self.cfg, stats, secrets.redact(command))

    def publish(self, run_dir: Path) -> str:
        h = self.cfg.hub
        return push.push(
            run_dir,
            h.repo_id,
            private=h.private,
            token=os.environ.get("HF_TOKEN"),
            retries=h.retries,
            retry_wait=h.retry_wait,
            log=info,
        )

    # ── the pipeline ───────────────────────────────────────────────────────────────────────────────
    def run(self) -> Result:
        started = time.perf_counter()
        run_dir = self.run_dir or new_run_dir()
        stages = Stages(
            self.STAGES
            + (("Evaluating",) if self.cfg.eval.after_train else ())
            + (("Publishing to the Hub",) if self.cfg.hub.push else ())
        )
        stats: dict = {}
        with rundir.owned(run_dir, main=self.main):  # claimed; cleared if the run fails before it has results
            if self.main:
                self._save_config(run_dir)
            setup_logging(run_dir if self.main else None)
            if not self.main:
                log.setLevel(logging.WARNING)  # stage lines and numbers are rank 0's to print
            L.seed_everything(self.cfg.seed, workers=True, verbose=False)
            log.info(f"ftlab run dir: {run_dir}")
            stages.start("Checking model source and access", self.cfg.model.name)
            source_dir = self.model_source()
            trackers = self.check_access(run_dir)
            benchmarks = self.benchmarks() if self.main else None  # a bad task name fails now, not after the fit
            with trackers.closing(stats):  # an error or Ctrl+C closes the tracker runs as FAILED or KILLED
                stages.start("Loading tokenizer and data", rows.data_label(self.cfg.data))
                tokenizer = self.load_tokenizer(source_dir)
                data = self.prepare_data(tokenizer)
                stats.update(data.stats)
                stages.start("Loading base model", load.describe_quant(self.cfg.quant, self.precision))
                info(f"precision: {self.precision} ({self.precision_why})")
                stats["precision"] = self.precision
                attention = stats["attention"] = self.choose_attention(data.rows, data.prepared.examples)
                base = self.load_base_model(source_dir, attention)
                stages.start("Adding LoRA adapters", f"r={self.cfg.lora.r} alpha={self.cfg.lora.alpha}")
                L.seed_everything(self.cfg.seed, workers=True, verbose=False)  # adapter init independent of loading
                model = self.get_peft_model(base)
                if self.cfg.data.packing:
                    self.check_packing(model, attention)
                trainable, total = model.get_nb_trainable_parameters()
                info(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
                stats.update(trainable_parameters=trainable, total_parameters=total)
                stages.start("Training")
                fitted, weights = self.train(model, tokenizer, data, run_dir, trackers.start())
                stats.update(fitted)
                if not self.main:  # training, and the collectives in it, were the other ranks' part
                    return Result(stats, run_dir, model, tokenizer, data)
                stages.start("Saving artifacts", str(run_dir))
                stats.update(self._provenance(started))
                self.save(model, tokenizer, run_dir, stats, weights)
                if data.mix is not None:
                    write_json(run_dir / "data_mix.json", data.mix)
                if self.cfg.eval.after_train:
                    stages.start("Evaluating", f"{self.cfg.eval.split} split, base model vs tuned")
                    stats.update(report.flat(self.evaluate(model, tokenizer, run_dir, benchmarks)))
                    write_json(run_dir / "metrics.json", stats)
                info(f"model card: {self.write_card(run_dir, stats)}")
                trackers.finish(stats, "FINISHED")
            if self.cfg.hub.push:
                stages.start("Publishing to the Hub", self.cfg.hub.repo_id)
                stats["hub_url"] = self.publish(run_dir)
                info(f"published: {stats['hub_url']}")
                write_json(run_dir / "metrics.json", stats)
            stages.finish()
            log.info(f"ftlab: done; adapter in {run_dir / 'adapter'}")
            return Result(stats, run_dir, model, tokenizer, data)

    def _provenance(self, started: float) -> dict:
        return dict(
            versions=rundir.versions(),
            git_commit=rundir.git_commit(),
            model=self.cfg.model.name,
            wall_seconds=round(time.perf_counter() - started, 2),
        )

    def _save_config(self, run_dir: Path) -> None:
        """CLI runs get .hydra/ from Hydra; API runs write the same config.yaml, so both re-run alike."""
        saved = run_dir / ".hydra" / "config.yaml"
        if not saved.exists():
            write_text(saved, OmegaConf.to_yaml(self.cfg))

    def _resume_checkpoint(self) -> Optional[Path]:
        if self.cfg.resume is None:
            return None
        found = rundir.resume_checkpoint(self.cfg.resume)
        info(f"resuming from {found}")
        return found


def _needs(kind: str) -> str:
    """What a method training on `kind` needs, from the formats that make it: "chat rows (conversation, qa,
    instruction) or text"."""
    by_need: dict = {}
    for fmt in formats.of_kind(kind):
        by_need.setdefault(fmt.needs, []).append(fmt.name)
    parts = [need if names == [need] else f"{need} ({', '.join(names)})" for need, names in by_need.items()]
    return " or ".join(parts)
