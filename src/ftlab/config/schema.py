"""The one typed schema of every ftlab option: a run's config, the run-using commands' options, the sweeper's.

Each option is declared once, with its default, its constraints (`choices`, bounds) and a one-line doc under it;
`--help` and docs/options.md are generated from the declarations. Most are declared here; the rooms that grow
declare their own and the schema is assembled from them: each method its method.* section (methods/), each data
format its data.columns.* keys and the data.format choice (data/formats/), each tracker its tracker.<name>.*
settings and the tracker choice (tracking/). conf/*.yaml only selects and overrides;
checks.py enforces the constraints. Importing this module must stay cheap: no torch.
"""

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ftlab.data.formats import FORMATS, columns_schema
from ftlab.exports import EXPORTS
from ftlab.methods import METHODS
from ftlab.tracking import TRACKERS
from ftlab.utils.options import opt

DTYPE_NAMES = ["float32", "bfloat16", "float16"]


@dataclass
class RandomInitOptions:
    """Shape of a randomly initialised Llama-style model, built from config instead of downloaded."""

    hidden_size: int = opt(64, gt=0)
    """Width of the residual stream."""
    intermediate_size: int = opt(128, gt=0)
    """Width of the MLP."""
    num_layers: int = opt(2, gt=0)
    """Number of decoder layers."""
    num_heads: int = opt(4, gt=0)
    """Attention heads; must divide hidden_size."""
    num_kv_heads: int = opt(2, gt=0)
    """Key/value heads (grouped-query attention); must divide num_heads."""
    max_position_embeddings: int = opt(1024, gt=0)
    """Longest sequence the model accepts."""


@dataclass
class ModelOptions:
    name: str = opt(example="model.name=meta-llama/Llama-3.2-1B-Instruct")
    """Hugging Face Hub id of the base model; also how runs, tags and metrics name it."""
    path: Optional[str] = None
    """Local directory (or other Hub id) to load from instead of `name`: a downloaded copy, offline."""
    gguf_file: Optional[str] = None
    """GGUF file inside `path` to dequantise once into ftlab's safetensors cache (see `cache_dir`)."""
    random_init: Optional[RandomInitOptions] = None
    """Build a random model of this shape; `path` then supplies only the tokenizer. For tests and smoke runs."""
    dtype: str = opt("auto", choices=["auto"] + DTYPE_NAMES)
    """Frozen weight dtype. auto: the dtype of trainer.precision (bfloat16 for bf16-*, float16 for 16-*, else
    float32)."""
    attn_implementation: str = opt("auto", choices=["auto", "sdpa", "eager", "flash_attention_2"])
    """Attention kernel. auto: sdpa on a GPU; on a CPU eager when every training row is at most 192 tokens (faster
    there), else sdpa. flash_attention_2 needs a CUDA GPU and the flash-attn package; with data.packing it runs each
    packed example as its own sequence."""
    liger_kernels: bool = False
    """Liger's fused Triton kernels (RoPE, RMSNorm, SwiGLU, and a fused linear cross-entropy that never holds the
    whole logits): less memory and faster steps on a CUDA GPU; needs the liger-kernel package."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 30% slower."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) to load, pinned for reproducibility."""
    trust_remote_code: bool = False
    """Allow model code from the Hub repo to run. Only for repos you trust."""


@dataclass
class QuantOptions:
    bits: Optional[int] = opt(None, choices=[None, 4, 8])
    """Load the frozen base weights quantised by bitsandbytes: null (off), 4 (QLoRA) or 8."""
    quant_type: str = opt("nf4", choices=["nf4", "fp4"])
    """4-bit data type; NF4 suits normally distributed weights."""
    double_quant: bool = True
    """Also quantise the 4-bit quantisation constants (saves ~0.4 bits per weight)."""
    compute_dtype: str = opt("auto", choices=["auto"] + DTYPE_NAMES)
    """Dtype the 4-bit layers dequantise to for their matmuls. auto: the dtype of trainer.precision."""


@dataclass
class LoraOptions:
    r: int = opt(16, gt=0, example="lora.r=16")
    """Adapter rank. Higher: more capacity, memory and time."""
    alpha: float = opt(32.0, gt=0, example="lora.alpha=32")
    """Scale of the adapter update (alpha / r, or alpha / sqrt(r) with rsLoRA)."""
    dropout: float = opt(0.05, ge=0, lt=1, example="lora.dropout=0.05")
    """Dropout on the adapter input, in [0, 1). It regularises small datasets; 0 skips it, the fastest step (the
    bf16 CPU demo: 386 against 313 tokens/s at 0.05)."""
    shared_dropout: bool = True
    """Projections that read the same tensor (q/k/v, gate/up) share one dropout mask: each still sees dropout at
    rate `dropout`, with 4 masks per decoder layer drawn instead of 7. false: one mask per projection, as PEFT."""
    target_modules: List[str] = opt(["all-linear"], example="lora.target_modules=[q_proj,v_proj]")
    """Module names to adapt, or [all-linear] for every linear layer except the output head."""
    bias: str = opt("none", choices=["none", "all", "lora_only"])
    """Which biases to train alongside the adapters."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r): keeps the update size steady when r grows."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA): often better at low rank, slower per step."""
    init_weights: str = opt("default", choices=["default", "gaussian", "pissa", "olora"])
    """Adapter initialisation. pissa/olora start from the base weights' principal directions (no quant)."""
    modules_to_save: List[str] = opt([])
    """Extra modules trained in full and saved with the adapter (e.g. [lm_head] for new tokens)."""


@functools.cache
def source_columns_schema(columns: type) -> type:
    """data.sources.N.columns: each key of the data.columns section `columns`, null by default (the run's value)."""
    return dataclasses.make_dataclass(
        "SourceColumns",
        [
            (f.name, Optional[f.type], field(default=None, metadata={"doc": f"null: data.columns.{f.name}."}))
            for f in dataclasses.fields(columns)
        ],
    )


@dataclass
class SourceOptions:
    """One dataset of several (data.sources): where its rows come from, how they read, and its weight in the mix.
    Each is read, split, tokenized and cached on its own; an option left null takes the run's data.* value."""

    path: Optional[str] = opt(None, example="data.sources.0.path=/data/chats.jsonl")
    """Local data, as data.path takes it: a file, a folder of them, or a folder written by save_to_disk."""
    name: Optional[str] = opt(None, example="data.sources.1.name=tatsu-lab/alpaca")
    """Hugging Face Hub dataset (or a local dataset folder) loaded with the datasets library, instead of `path`."""
    subset: Optional[str] = None
    """Configuration (subset) of the Hub dataset `name`."""
    val_path: Optional[str] = None
    """This source's validation file; otherwise its named validation split, else `val_size` of its training rows."""
    test_path: Optional[str] = None
    """This source's test file; otherwise its named test split, else `test_size` of its training rows."""
    val_size: Optional[float] = opt(None, gt=0, example="data.sources.0.val_size=50")
    """Validation rows carved from this source's training rows (fraction below 1 or row count); null: data.val_size."""
    test_size: Optional[float] = opt(None, ge=0)
    """Test rows carved from this source's training rows (fraction or count; 0: none); null: data.test_size."""
    format: Optional[str] = opt(None, choices=lambda: [None, "auto", *FORMATS.names()])
    """This source's row format; null: data.format (whose auto detects each source's format from its own columns)."""
    columns: Any = field(default_factory=lambda: source_columns_schema(columns_schema())())
    """This source's column names where they differ from data.columns.*, e.g. data.sources.1.columns.question=prompt;
    null ones are data.columns'."""
    system_prompt: Optional[str] = None
    """System prompt for this source's rows that bring none; null: data.system_prompt."""
    text_per_line: Optional[bool] = None
    """Text format: each non-empty line of this source's .txt files is one document; null: data.text_per_line."""
    weight: float = opt(1.0, gt=0, example="data.sources.0.weight=3", shapes_tokens=False)
    """data.mix=weighted: this source's share of the training examples is its weight over the sum of the weights."""
    label: Optional[str] = opt(None, example="data.sources.0.label=chats", shapes_tokens=False)
    """This source's name in the mix line, data_mix.json and its val/loss_<label> (letters, digits, - _ .); null:
    the file's stem or the Hub name's last part."""


@dataclass
class DataOptions:
    path: Optional[str] = opt(None, example="data.path=/data/train.jsonl")
    """Local data: a .jsonl, .json, .csv, .parquet or .txt file (all but .parquet also .gz or .zst compressed), a
    folder of them (train*/validation*/test* files become those splits), or a folder written by datasets'
    save_to_disk."""
    name: Optional[str] = opt(None, example="data.name=tatsu-lab/alpaca")
    """Hugging Face Hub dataset (or a local dataset folder) loaded with the datasets library, instead of `path`."""
    subset: Optional[str] = None
    """Configuration (subset) of the Hub dataset `name`."""
    val_path: Optional[str] = None
    """A separate validation file; otherwise a named validation split, else `val_size` of the training rows."""
    test_path: Optional[str] = None
    """A separate test file; otherwise a named test split, else `test_size` of the training rows."""
    val_size: float = opt(0.1, gt=0, example="data.val_size=0.1")
    """Validation rows carved from the training rows when the source has no validation split: a fraction
    below 1, or a row count."""
    test_size: float = opt(0.0, ge=0, example="data.test_size=0.1")
    """Test rows carved from the training rows when the source has no test split (fraction or count; 0: none)."""
    format: str = opt("auto", choices=lambda: ["auto", *FORMATS.names()], example="data.format=qa")
    """Row format (data/formats/). auto: detected from the columns (and printed). preference (prompt/chosen/rejected)
    and kto (prompt/completion/label) are for the preference methods (method=dpo ...); text is raw documents for
    continued pretraining (loss on every token)."""
    columns: Any = field(default_factory=lambda: columns_schema()())
    """Which column of your data holds each field of a format: map yours, e.g. data.columns.question=prompt."""
    system_prompt: Optional[str] = None
    """System prompt for rows that bring none."""
    chat_template: Optional[str] = opt(None, example="data.chat_template=chatml")
    """null: the tokenizer's own. Or a shipped template (chatml, llama3, mistral, gemma), or a .jinja file path."""
    train_on: str = opt("assistant", choices=["assistant", "last_assistant", "all"])
    """Tokens that get a loss: every assistant turn (and its end-of-turn token), the last one only, or all."""
    max_seq_len: int = opt(512, gt=0, example="data.max_seq_len=1024")
    """Tokens per example after the chat template (per packed row with packing); longer ones are truncated (text
    documents are cut into blocks of this length instead, and a preference answer must keep a scored token)."""
    packing: bool = opt(False, shapes_tokens=False)
    """Pack several examples into each row of up to max_seq_len tokens; attention stays inside each example."""
    group_by_length: bool = opt(False, shapes_tokens=False)
    """Without packing: batch examples of similar length together, so less of each batch is padding."""
    text_per_line: bool = False
    """Text format: each non-empty line of a .txt file is one document; false: each .txt file is one document."""
    skip_bad_rows: bool = False
    """Skip rows that fail checks (printing the count and the first reasons) instead of stopping at the first."""
    cache: bool = opt(True, shapes_tokens=False)
    """Cache tokenized data in cache_dir, keyed by everything that shapes it, so re-runs skip tokenizing."""
    batch_size: int = opt(8, gt=0, example="data.batch_size=8", shapes_tokens=False)
    """Examples (or packed rows) per micro-batch, per device."""
    num_workers: int = opt(0, ge=0, shapes_tokens=False)
    """DataLoader worker processes; 0 loads in the training process."""
    sources: List[SourceOptions] = opt(
        [], example="data.sources=[{path:chats.jsonl,weight:3},{name:tatsu-lab/alpaca}]", shapes_tokens=False
    )
    """Several datasets instead of data.path/data.name, each with its own options (docs/data.md); each keeps its
    validation rows (val/loss_<label>). The chat template stays data.chat_template: a model has one at inference."""
    mix: str = opt("concat", choices=["concat", "weighted"], example="data.mix=weighted", shapes_tokens=False)
    """How data.sources make the training examples: concat takes every one of every source (weights must stay 1);
    weighted draws data.mix_size of them, each source's share its weight, seeded (a small source repeats)."""
    mix_size: int = opt(0, ge=0, example="data.mix_size=2000", shapes_tokens=False)
    """data.mix=weighted: training examples in the mix; 0: as many as the sources have together."""


@dataclass
class TrackerOptions:
    name: str = opt("none", choices=lambda: ["none", *TRACKERS.names(), "all"], example="tracker=mlflow")
    """Experiment tracker (tracking/): none (metrics stay in the run dir), one by name, or all (every one whose
    package is installed)."""
    experiment: str = "ftlab"
    """MLflow experiment of the run; a sweep's trials go there too, under a parent run named after the study."""
    run_name: Optional[str] = None
    """Name of the run in the trackers; null: <experiment>-YYYYMMDD-HHMMSS (sweep trials: <study>-trial-N)."""
    tags: List[str] = opt([], example="tracker.tags=[baseline,v2]")
    """Extra tags on the run (model, quant, LoRA rank and data are always tagged)."""


@functools.cache
def _trackers(version: int) -> type:
    return dataclasses.make_dataclass(
        "TrackerOptions",
        [
            (
                t.name,
                t.Options,
                field(default_factory=t.Options, metadata={"doc": f"Used with tracker={t.name} or all."}),
            )
            for t in TRACKERS
        ],
        bases=(TrackerOptions,),
    )


def tracker_schema() -> type:
    """The tracker section: its own keys and each tracker's settings (tracker.<name>.*, declared in tracking/)."""
    TRACKERS.names()  # found first: finding them registers them, which is what the version counts
    return _trackers(TRACKERS.version)


@dataclass
class HubOptions:
    push: bool = False
    """Upload the adapter, tokenizer and model card to the Hugging Face Hub after training."""
    repo_id: Optional[str] = opt(None, example="hub.repo_id=your-name/smollm2-demo-lora")
    """Model repo to push to (created if missing)."""
    private: bool = True
    """Create the repo private. An existing repo keeps its visibility."""
    token: Optional[str] = None
    """Secret. Prefer the HF_TOKEN environment variable or `hf auth login`; never written to any file."""
    retries: int = opt(4, ge=0)
    """Retries of an upload that failed on a network error, a timeout, 429 or 5xx, with doubling waits."""
    retry_wait: float = opt(2.0, ge=0)
    """Seconds before the first retry; each next wait doubles."""


@dataclass
class GenerationOptions:
    """How answers are generated, by inference, evaluation and the MLflow model; saved with each run."""

    max_new_tokens: int = opt(256, gt=0, example="generation.max_new_tokens=64")
    """Longest answer, in tokens; generation also stops at the chat template's end-of-turn marker."""
    do_sample: bool = False
    """false: greedy (always the likeliest token; the same answer every time). true: sample, seeded by `seed`."""
    temperature: float = opt(0.7, gt=0, example="generation.temperature=0.7")
    """Sampling only: below 1 sharpens the distribution, above 1 flattens it."""
    top_p: float = opt(0.9, gt=0, le=1)
    """Sampling only: draw from the smallest set of tokens whose probabilities add up to this (nucleus)."""
    top_k: int = opt(50, ge=0)
    """Sampling only: draw from the k likeliest tokens; 0 turns the limit off."""
    repetition_penalty: float = opt(1.0, gt=0)
    """Above 1 discourages tokens already in the text; 1 is off."""
    batch_size: int = opt(8, gt=0, example="generation.batch_size=16")
    """Prompts generated together (left-padded); more is faster until memory runs out."""


@dataclass
class EvalOptions:
    after_train: bool = opt(False, example="eval.after_train=true")
    """Evaluate at the end of training: scores go to metrics.json (eval_*) and the trackers, and a sweep may
    optimize one (hydra.sweeper.objective=eval_rouge_l hydra.sweeper.direction=maximize)."""
    split: str = opt("test", choices=["test", "validation"], example="eval.split=validation")
    """Data split whose last assistant turns are the references (data.test_size or data.test_path make one)."""
    max_examples: int = opt(0, ge=0, example="eval.max_examples=100")
    """Evaluate only the first N examples of the split; 0: all of them."""
    compare_base: bool = True
    """Also score the base model, adapter switched off, on the same examples: the report shows both."""
    bootstrap: int = opt(1000, ge=100)
    """Resamples of the bootstrap behind each 95% interval of a report (the change of each score, each benchmark,
    the judge's win rate), drawn with `seed`."""


@dataclass
class HarnessOptions:
    """Standard benchmarks through lm-evaluation-harness (docs/evaluation.md): the same tasks, settings and few-shot
    seed on the base model (adapter off) and the tuned one, with a paired bootstrap interval on each difference."""

    tasks: List[str] = opt([], example="harness.tasks=[ftlab_facts]")
    """lm-eval task or group names (mmlu, gsm8k, hellaswag, ifeval ...; the shipped offline task: ftlab_facts);
    empty: no benchmark. ftlab.evaluate runs them; with eval.after_train, so does training."""
    include_path: Optional[str] = opt(None, example="harness.include_path=my_tasks")
    """A folder of your own lm-eval task YAML files, searched before the harness's own."""
    num_fewshot: Optional[int] = opt(None, ge=0, example="harness.num_fewshot=5")
    """Few-shot examples per prompt, drawn with `seed`; null: each task's own default."""
    limit: int = opt(0, ge=0, example="harness.limit=100")
    """Score only the first N documents of each task (a quick look; not a comparable score); 0: all."""
    batch_size: int = opt(8, gt=0)
    """Requests the harness sends the model together."""
    chat_template: bool = False
    """Wrap each prompt in the run's chat template (as a chat user would ask); false: plain text, as leaderboards
    score base models."""


@dataclass
class OptimOptions:
    name: str = opt("adamw", choices=["adamw", "adamw_8bit"])
    """Optimizer. adamw_8bit keeps its state in 8 bits (bitsandbytes)."""
    lr: float = opt(2e-4, gt=0, example="optim.lr=2e-4")
    """Peak learning rate."""
    weight_decay: float = opt(0.0, ge=0)
    """Decoupled weight decay on the adapter weights."""
    betas: List[float] = opt([0.9, 0.999])
    """Adam's moment decay rates."""
    scheduler: str = opt("cosine", choices=["cosine", "linear", "constant"])
    """Learning-rate decay after warmup."""
    warmup_steps: int = opt(0, ge=0)
    """Optimizer steps of linear warmup from zero."""
    min_lr_ratio: float = opt(0.0, ge=0, le=1)
    """Floor of the decay, as a fraction of `lr`."""


@dataclass
class FsdpOptions:
    """Fully sharded data parallel (trainer.strategy=fsdp): each decoder layer's weights, gradients and optimizer
    state are split over the ranks and gathered only while the layer runs."""

    sharding_strategy: str = opt("FULL_SHARD", choices=["FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD"])
    """FULL_SHARD: least memory. SHARD_GRAD_OP: weights stay whole between forward and backward (faster, more
    memory). HYBRID_SHARD: shard within a node, replicate across nodes (slow links between nodes)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass: less memory, about 30% slower. Use this
    rather than model.gradient_checkpointing under FSDP."""
    cpu_offload: bool = False
    """Keep the sharded parameters in CPU memory between uses: fits larger models, much slower."""


@dataclass
class TrainerOptions:
    accelerator: str = opt("cpu", choices=["cpu", "gpu", "auto"])
    """Where to train."""
    devices: int = opt(1, gt=0, example="trainer.devices=8")
    """Devices (processes) per node. Above 1, Lightning starts one process per device (under torchrun or srun,
    the launcher's processes are used: set this to --nproc_per_node or --ntasks-per-node)."""
    num_nodes: int = opt(1, gt=0, example="trainer.num_nodes=2")
    """Machines in the job, each running trainer.devices processes (torchrun --nnodes, SLURM --nodes)."""
    strategy: str = opt("auto", choices=["auto", "ddp", "fsdp"], example="trainer.strategy=fsdp")
    """How ranks share the work. ddp: each holds the whole model, gradients are averaged. fsdp: the model is
    sharded over the ranks (CUDA only), for models too large for one device. auto: ddp when there are several
    ranks."""
    fsdp: FsdpOptions = field(default_factory=FsdpOptions)
    """Settings of trainer.strategy=fsdp."""
    precision: str = opt("auto", choices=["auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed"])
    """Numeric precision. auto: bf16-mixed where the hardware computes in bfloat16 natively (recent GPUs, CPUs
    with AVX512-BF16 or AMX), 16-mixed on older GPUs, else 32-true (bfloat16 emulated on a CPU is ~100x slower)."""
    max_steps: int = opt(-1, ge=-1, example="trainer.max_steps=100")
    """Stop after this many optimizer steps; -1: run `max_epochs`."""
    max_epochs: int = opt(1, ge=-1, example="trainer.max_epochs=3")
    """Stop after this many passes over the data (when `max_steps` is -1)."""
    accumulate_grad_batches: int = opt(1, gt=0, example="trainer.accumulate_grad_batches=4")
    """Micro-batches per optimizer step; effective batch = batch_size x this x devices x num_nodes. A step's loss
    is the mean over all its supervised tokens, however they are split into micro-batches and ranks."""
    gradient_clip_val: float = opt(1.0, ge=0)
    """Clip the gradient norm to this; 0 turns clipping off."""
    val_every_n_steps: int = opt(0, ge=0)
    """Validate every N optimizer steps during training; 0: only before and after."""
    log_every_n_steps: int = opt(5, gt=0)
    """How often training metrics are recorded."""
    compile: bool = False
    """torch.compile each decoder layer (dynamic shapes), for GPUs: the first step pays for compiling. On a 2-core
    CPU compiling SmolLM2's layers had not finished after 9 minutes."""
    checkpoint_every_n_steps: int = opt(25, gt=0)
    """How often a resumable checkpoint (adapter + optimizer state) is written. SIGTERM (and SLURM's requeue
    signal) also writes one, at the end of the optimizer step under way, then exits with 143."""


@dataclass
class RunConfig:
    """The config of a run: what `python -m ftlab` composes, validates and saves as .hydra/config.yaml."""

    model: ModelOptions = field(default_factory=ModelOptions)
    quant: QuantOptions = field(default_factory=QuantOptions)
    lora: LoraOptions = field(default_factory=LoraOptions)
    method: Any = field(default_factory=lambda: {"name": "sft"})
    """How the model learns: method=NAME picks a method (methods/), whose own keys are the method.* options."""
    data: DataOptions = field(default_factory=DataOptions)
    tracker: Any = field(default_factory=lambda: tracker_schema()())
    """Experiment tracking: tracker=NAME picks a tracker (tracking/), whose settings are tracker.NAME.*."""
    hub: HubOptions = field(default_factory=HubOptions)
    generation: GenerationOptions = field(default_factory=GenerationOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    harness: HarnessOptions = field(default_factory=HarnessOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    seed: int = opt(42, ge=0)
    """Seeds data order, splits, adapter init and dropout: same seed, same config, same losses."""
    resume: Optional[str] = opt(None, example="resume=auto")
    """Continue an interrupted run from its last checkpoint: its run dir, a checkpoint file (checkpoints/
    previous.ckpt goes one back), `last` for the newest run, or `auto`: the newest run of this same config that
    has a checkpoint, else start fresh (for jobs that are requeued with the same command)."""
    cache_dir: str = "~/.cache/ftlab"
    """Where converted models (GGUF, random init) and tokenized data are cached between runs."""


def run_config(method: str) -> type:
    """RunConfig with its method section typed by `method`'s options (a ConfigError names the methods there are)
    and data.columns by the formats' columns: what a config of that method is validated against."""
    return _run_config(METHODS.get(method).Options, columns_schema(), tracker_schema())


@functools.cache
def _run_config(method_options: type, columns: type, tracker: type) -> type:
    own_columns = source_columns_schema(columns)
    source = dataclasses.make_dataclass(
        "SourceOptions", [("columns", own_columns, field(default_factory=own_columns))], bases=(SourceOptions,)
    )
    sources = {f.name: f for f in dataclasses.fields(DataOptions)}["sources"]
    data = dataclasses.make_dataclass(
        "DataOptions",
        [
            ("columns", columns, field(default_factory=columns)),
            ("sources", List[source], field(default_factory=list, metadata=sources.metadata)),
        ],
        bases=(DataOptions,),
    )
    fields = [
        ("method", method_options, field(default_factory=method_options)),
        ("data", data, field(default_factory=data)),
        ("tracker", tracker, field(default_factory=tracker)),
    ]
    return dataclasses.make_dataclass("RunConfig", fields, bases=(RunConfig,))


# ── options of the commands that use a finished run: python -m ftlab.infer | ftlab.evaluate | ftlab.export ──
# Each also takes run-config keys (generation.*, eval.*, quant=4bit, data.test_path=...) over the run's saved config.

RUN_EXAMPLE = "run=outputs/2026-11-24/10-00-00"


@dataclass
class InferCommand:
    """With neither `prompt` nor `input`, ftlab.infer chats interactively (/reset clears, /exit or Ctrl+D ends)."""

    run: str = opt(example=RUN_EXAMPLE)
    """A run dir, an adapter dir, the Hub id of a pushed adapter, or a plain model (dir or Hub id) to use alone."""
    prompt: Optional[str] = opt(None, example='prompt="Order 12 shipped on May 3, 2001."')
    """One prompt; its answer is printed to stdout."""
    system: Optional[str] = None
    """System prompt for `prompt`, interactive chat and prompts-file lines that bring none."""
    input: Optional[str] = opt(None, example="input=prompts.jsonl")
    """JSONL of prompts, one per line: {"prompt": ...}, {"messages": [...]}, or rows in the run's data columns."""
    output: Optional[str] = None
    """JSONL of answers to `input`, one line per input line; null: <input>-outputs.jsonl beside it (never over
    an existing file)."""
    base_only: bool = False
    """Answer with the run's base model alone (same chat template, adapter not loaded), for comparison."""


@dataclass
class ServeCommand:
    """Serves /v1/chat/completions (streaming too), /v1/completions and /v1/models; `base` names the base model."""

    run: str = opt(example=RUN_EXAMPLE)
    """A run dir, an adapter dir, the Hub id of a pushed adapter, or a plain model (dir or Hub id)."""
    host: str = opt("127.0.0.1", example="host=0.0.0.0")
    """Address to listen on; the default answers this machine only."""
    port: int = opt(8000, ge=0, le=65535, example="port=8080")
    """Port to listen on; 0 picks a free one (printed)."""
    api_key_env: str = opt("FTLAB_API_KEY", example="api_key_env=MY_KEY")
    """The environment variable holding the key clients must send (Authorization: Bearer KEY); unset: no key."""


@dataclass
class EndpointOptions:
    """A model behind an OpenAI-compatible API (llama.cpp's llama-server, Ollama, vLLM, ftlab.serve): its answers
    to the held-out prompts, scored beside the run's own."""

    url: Optional[str] = opt(None, example="endpoint=http://127.0.0.1:8080/v1")
    """The API's base URL (ending in /v1); `endpoint=URL` sets it. null: no endpoint."""
    model: Optional[str] = opt(None, example="endpoint.model=smollm2-dates")
    """The model name to ask for; null: the first one the server's /v1/models lists."""
    api_key_env: str = opt("OPENAI_API_KEY", example="endpoint.api_key_env=MY_KEY")
    """The environment variable holding the API key, if the server needs one (the key is never written)."""
    concurrency: int = opt(4, gt=0)
    """Requests in flight at once."""
    timeout: float = opt(600.0, gt=0)
    """Seconds to wait for one answer before the evaluation stops with an error."""


@dataclass
class JudgeOptions:
    """A judge model compares the base and tuned answers to each held-out prompt, in both orders."""

    endpoint: Optional[str] = opt(None, example="judge.endpoint=http://127.0.0.1:8080/v1")
    """The judge's OpenAI-compatible base URL (ending in /v1); null: no judge, unless `model` names a local one."""
    model: Optional[str] = opt(None, example="judge.model=Qwen/Qwen2.5-7B-Instruct")
    """With `endpoint`: the model name to ask for (null: the first the server lists). Without: a local model (a
    dir, Hub id or ftlab run) that judges in this process."""
    rubric: Optional[str] = opt(None, example="judge.rubric=my_rubric.md")
    """A file with your own judging prompt, with the placeholders {question}, {reference}, {answer_a} and
    {answer_b}, asking for a last line of [[A]], [[B]] or [[C]] (a tie); null: the shipped rubric."""
    api_key_env: str = opt("OPENAI_API_KEY", example="judge.api_key_env=MY_KEY")
    """The environment variable holding the judge's API key, if its server needs one (never written)."""
    max_tokens: int = opt(512, gt=0)
    """Longest judgment, in tokens (the rubric asks for reasons before the verdict)."""
    concurrency: int = opt(4, gt=0)
    """Judgments in flight at once (an endpoint judge); a local judge batches generation.batch_size."""
    timeout: float = opt(600.0, gt=0)
    """Seconds to wait for one judgment before the evaluation stops with an error."""


@dataclass
class EvaluateCommand:
    """Scores the held-out eval.split; harness.tasks, judge.* and endpoint add their own tables."""

    run: str = opt(example=RUN_EXAMPLE)
    """A run dir, or an adapter (dir or Hub id) with ftlab's saved config; data.* keys may point at other data."""
    output: Optional[str] = None
    """Report folder; null: <run dir>/eval (eval-2, eval-3 ... once taken), outputs/eval/DATE/TIME without one."""
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    judge: JudgeOptions = field(default_factory=JudgeOptions)


@dataclass
class GgufOptions:
    dtype: str = opt("f16", choices=["f32", "f16", "bf16", "q8_0"], example="gguf.dtype=q8_0")
    """Tensors of format=gguf and gguf-adapter (norms and biases stay f32): f16 halves f32 at no visible cost;
    q8_0 halves f16 again, its logits a little further off (the check's tolerance widens to match); bf16 needs a
    llama.cpp built with it."""


@dataclass
class ExportCommand:
    run: str = opt(example=RUN_EXAMPLE)
    """A run dir or an adapter (dir or Hub id) whose adapter is merged into its base model."""
    format: str = opt("merged", choices=lambda: EXPORTS.names(), example="format=gguf")
    """An export format (exports/formats/). merged: a transformers model folder. gguf: one model.gguf for llama.cpp
    and Ollama, with a Modelfile. gguf-adapter: the adapter alone, as a llama.cpp LoRA GGUF, for use on the base
    model's GGUF."""
    output: Optional[str] = opt(None, example="output=exports/smollm2-dates")
    """Folder to write (must not exist yet); null: <run dir>/merged, <run dir>/gguf or <run dir>/gguf-adapter."""
    dtype: str = opt("auto", choices=["auto"] + DTYPE_NAMES)
    """format=merged: dtype of the saved weights. auto: the base checkpoint's own (float32 if it names none)."""
    gguf: GgufOptions = field(default_factory=GgufOptions)
    check: bool = True
    """Reload what was written (with plain transformers; the adapter GGUF onto the base) and compare its logits,
    and for GGUF its tokenizer's ids, with the adapter model's."""


@dataclass
class PlanOptions:
    """What ftlab.plan measures the traced steps against."""

    device_memory: str = opt("80GB", example="plan.device_memory=24GB")
    """Memory of one device: 80GB (A100/H100 80GB), 24GB (RTX 4090), 24GiB; GB is 10^9 bytes, GiB 2^30."""
    headroom: float = opt(0.1, ge=0, lt=1, example="plan.headroom=0.15")
    """Share of device_memory kept free for what the step's tensors don't count: the CUDA context and kernels'
    workspaces (a few hundred MB), and the allocator's fragmentation."""
    switches: bool = True
    """Also trace what gradient checkpointing, 4-bit, FSDP and packing would change (a few more traced steps)."""
    check: bool = False
    """On a machine with a CUDA GPU: also run the configured step there for real (the weights are loaded as training
    loads them) and print torch.cuda.max_memory_allocated beside the plan."""


@dataclass
class PlanCommand:
    """Traces one training step of the configured run on fake tensors (no weights, no data, no GPU) and reports its
    peak memory per device; every run key works as in training (model=llama3 quant=4bit trainer=ddp ...)."""

    plan: PlanOptions = field(default_factory=PlanOptions)


# ── the Optuna sweeper: hydra/sweeper=ftlab_optuna (or a preset, sweep=NAME), keys under hydra.sweeper ──


@dataclass
class SamplerOptions:
    name: str = opt("tpe", choices=["tpe", "random", "grid"])
    """tpe, random, or grid (every combination of the choice(...) and range(...) params, each once)."""
    seed: Optional[int] = 42
    """Seeds the sampler: same seed, same sequence of suggestions."""


@dataclass
class PrunerOptions:
    name: str = opt("none", choices=["none", "median", "hyperband"])
    """Stop trials whose validation loss lags the study's (median, hyperband); needs trainer.val_every_n_steps > 0,
    since trials report at each validation."""
    n_startup_trials: int = opt(2, ge=0)
    """median: trials that always run to the end before any is pruned."""
    n_warmup_steps: int = opt(0, ge=0)
    """Optimizer steps a trial runs before it can be pruned (hyperband: its minimum resource)."""


@dataclass
class SweeperOptions:
    # Hydra instantiates its sweeper from this node; plugins must live in the hydra_plugins namespace
    _target_: str = "hydra_plugins.ftlab_optuna_sweeper.ftlab_optuna_sweeper.FtlabOptunaSweeper"
    n_trials: int = opt(10, gt=0, example="hydra.sweeper.n_trials=20")
    """Trials in the study in all, across re-runs and workers: a re-run runs only the missing ones."""
    n_jobs: int = opt(1, gt=0, example="hydra.sweeper.n_jobs=4")
    """Trials asked at once and launched as one batch of hydra/launcher: in parallel with joblib or submitit_*."""
    storage: Optional[str] = "sqlite:///${ftlab.outputs:}/sweeps/optuna.db"
    """Optuna storage URL: a SQLite file in the outputs root by default; postgresql://... for workers on several
    machines; null: in memory (no resume, no pruning)."""
    study_name: str = "ftlab"
    """The study, within `storage`: the same name continues it."""
    direction: str = opt("minimize", choices=["minimize", "maximize"])
    """Whether a lower or a higher `objective` is better."""
    objective: str = "val_loss_after"
    """The metrics.json value a trial reports: val_loss_after, or with eval.after_train=true an evaluation score
    such as eval_rouge_l (direction=maximize)."""
    sampler: SamplerOptions = field(default_factory=SamplerOptions)
    """How the next trial's params are chosen."""
    pruner: PrunerOptions = field(default_factory=PrunerOptions)
    """When a trial is stopped early."""
    max_failure_rate: float = opt(0.5, ge=0, le=1)
    """Stop the sweep once more than this share of n_trials failed."""
    params: Dict[str, str] = field(default_factory=dict)
    """The search space: key: choice(a, b, ...) | interval(lo, hi) | tag(log, interval(lo, hi)) | range(lo, hi)."""
