"""The memory a run needs per device, from real training steps on fake tensors: no weights, no data, no GPU.

The model is built from its config alone (model/architecture.py) on the meta device, quantized as bitsandbytes
quantizes it, given its adapters by the recipe's own stage (get_peft_model: PEFT, k-bit preparation, gradient
checkpointing), then moved onto fake tensors, which have shapes and dtypes but no data. One optimizer step of the
method's own loss (LoRAModule) runs on a batch of full rows, under the precision's autocast, with the memory
tracker (model/memory.py) counting every storage it allocates. The optimizer's state is made first, as after a
first step, so the traced step is one of every later step.

The fake tensors live on the CPU device, so a GPU target is traced with the CPU's autocast and the CPU's kernels'
shapes: the same tensors but for what a CUDA kernel allocates for itself (cuBLAS workspaces, the CUDA context),
which plan.headroom leaves room for.
"""

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from transformers import AutoModelForCausalLM

from ftlab.data.kinds import KINDS
from ftlab.model import fake, load
from ftlab.model.architecture import architecture
from ftlab.model.fast_paths import resolve_attention
from ftlab.model.memory import MemoryTracker
from ftlab.train.recipe import FineTune
from ftlab.utils.errors import ConfigError


@dataclass
class Traced:
    """One traced step: its micro-batch, sequence length and the peak's split, in bytes."""

    batch: int
    seq: int
    split: Dict[str, int]

    @property
    def peak(self) -> int:
        return sum(self.split.values())


@dataclass
class Setup:
    """What a traced model is: the settled precision and attention, the config's source, its parameters."""

    precision: str
    attention: str
    config_from: str
    max_positions: int
    trainable: int
    total: int
    layer_bytes: int
    """The largest decoder layer's frozen weights: what FSDP gathers whole while the layer runs."""


@dataclass
class Model:
    """A model on fake tensors, ready to trace steps of."""

    setup: Setup
    step: Callable[[int, int], Traced]
    traces: List[Traced] = field(default_factory=list)

    def trace(self, batch: int, seq: int) -> Traced:
        for t in self.traces:
            if (t.batch, t.seq) == (batch, seq):
                return t
        traced = self.step(batch, seq)
        self.traces.append(traced)
        return traced


def target_precision(t) -> str:
    """trainer.precision with auto settled for the device the run will train on, not this machine: a GPU run's
    auto is bf16-mixed (a GPU without bfloat16, before Ampere, runs 16-mixed: the same bytes)."""
    if t.precision == "auto" and t.accelerator == "gpu":
        return "bf16-mixed"
    return load.resolve_precision(t.precision, t.accelerator)[0]


def build(cfg, real: bool = False) -> Model:
    """The configured model, quantization and adapters on fake tensors; ConfigError for what cannot be traced.
    `real`: on real CPU tensors instead (random weights; unquantized models only), to hold the fake trace
    against what the same step allocates for real."""
    ft = FineTune(cfg)
    if ft.method.samples:
        raise ConfigError(
            f"method={ft.method.name} generates its own answers while it trains, which ftlab.plan does not trace; "
            "plan the SFT step it starts from (method=sft)"
        )
    if cfg.quant.bits == 8:
        raise ConfigError("quant=8bit: ftlab.plan traces 4-bit (quant=4bit) and unquantized models only")
    config, config_from = architecture(cfg.model, cfg.cache_dir)
    t = cfg.trainer
    precision = target_precision(t)
    attention = resolve_attention(cfg.model.attn_implementation, t.accelerator == "gpu", cfg.data.max_seq_len)[0]
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(
            config, dtype=load.weight_dtype(cfg.model, precision), attn_implementation=attention
        )
    base.config.use_cache = False
    total = sum(p.numel() for p in base.parameters())  # before 4-bit packs two weights into each byte
    if cfg.quant.bits == 4:
        fake.quantize_4bit(base, cfg.quant, precision, sharded=t.strategy == "fsdp")
    model = ft.get_peft_model(base)
    module = ft.make_module(model, tokenizer=None)
    module.train()
    mode = None if real else FakeTensorMode(allow_non_fake_inputs=True)
    if mode is not None:
        fake.to_fake(model, mode)
    else:
        model.to_empty(device="cpu")
        model.get_base_model().tie_weights()  # to_empty gives tied weights a storage each
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
    setup = Setup(
        precision=precision,
        attention=attention,
        config_from=config_from,
        max_positions=getattr(config, "max_position_embeddings", 0) or 0,
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total=total,
        layer_bytes=fake.largest_layer(model),
    )
    autocast = _autocast(precision, "cpu")  # the fake tensors' device
    kind = KINDS.get(ft.method.kind)

    def step(batch: int, seq: int) -> Traced:
        return _step(module, kind, mode, autocast, batch, seq)

    return Model(setup, step)


def measure(cfg, batch: int, seq: int) -> tuple:
    """(the traced step, torch.cuda.max_memory_allocated over the same step run for real on this machine's GPU):
    the model loaded as training loads it (its weights downloaded, or random_init built), on a fake-free batch of
    the same full rows."""
    if not torch.cuda.is_available():
        raise ConfigError("plan.check=true runs the step on this machine's GPU, and PyTorch sees none here")
    ft = FineTune(cfg)
    model = ft.get_peft_model(ft.load_base_model(ft.model_source()))
    module = ft.make_module(model, tokenizer=None).to("cuda")
    module.train()
    autocast = _autocast(target_precision(cfg.trainer), "cuda")
    traced = _step(
        module, KINDS.get(ft.method.kind), None, autocast, batch, seq, "cuda", torch.cuda.reset_peak_memory_stats
    )
    return traced, torch.cuda.max_memory_allocated()


def _step(
    module,
    kind,
    mode: Optional[FakeTensorMode],
    autocast: Callable,
    batch: int,
    seq: int,
    device: str = "cpu",
    warmed_up: Callable = lambda: None,
) -> Traced:
    """`warmed_up`: called once the optimizer's state exists, before the traced step."""
    model = module.model
    # full rows, every position labelled: the most a micro-batch of this shape can hold (no padding to mask, so no
    # attention mask either, which is what an unpadded batch gets)
    example = {
        "input_ids": [0] * seq,
        "labels": [0] * seq,
        "rejected_ids": [0] * seq,
        "rejected_labels": [0] * seq,
        "prompt_len": 1,
        "desirable": True,
    }
    batch_rows = kind.collate([example] * batch, pad_id=0)
    with mode or nullcontext():
        inputs = {k: _placed(v, mode, device) for k, v in batch_rows.items()}
        inputs["attention_mask"] = None
        optimizer = module.make_optimizer()
        mem = MemoryTracker()
        mem.add_model(model)
        mem.watch_head(model.get_output_embeddings())
        with mem:
            # the optimizer's state exists from the first step on: made first, so the traced step is a later one
            mem.phase = "optimizer"
            for p in model.parameters():
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            mem.phase = "activations"
            mem.reset_peak()
            warmed_up()
            with autocast():
                total, _ = module(inputs)
            total.backward()
            mem.phase = "optimizer"
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        split = dict(mem.at_peak)
    del optimizer, mem, inputs, total
    return Traced(batch, seq, split)


def _placed(value, mode: Optional[FakeTensorMode], device: str):
    if not isinstance(value, torch.Tensor):
        return value
    return mode.from_tensor(value) if mode is not None else value.to(device)


def _autocast(precision: str, device: str) -> Callable:
    """The autocast a *-mixed precision trains under, on `device`; nothing for the others."""
    if not precision.endswith("-mixed"):
        return nullcontext
    return lambda: torch.autocast(device, dtype=load.precision_dtype(precision))
