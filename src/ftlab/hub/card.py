"""The model card (README.md) pushed with an adapter: what it is, its data, its config, its numbers, how to redo it.

Only the keys listed in KEY_CONFIG reach the card: secrets such as hub.token or tracker.wandb.api_key live in
the same config and must never be published, so the card allow-lists instead of dumping the config.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ftlab.data.kinds import KINDS
from ftlab.data.rows import labels as source_labels
from ftlab.exports import vllm
from ftlab.hub import private
from ftlab.methods import METHODS
from ftlab.utils.files import write_text

# (config key, what it means) in table order; nothing outside this list is read from the config
KEY_CONFIG = [
    ("lora.r", "adapter rank"),
    ("lora.alpha", "adapter scale"),
    ("lora.dropout", "adapter dropout"),
    ("lora.target_modules", "adapted modules"),
    ("quant.bits", "base weights quantised to (bits)"),
    ("optim.lr", "peak learning rate"),
    ("optim.scheduler", "learning-rate schedule"),
    ("data.batch_size", "micro-batch size"),
    ("trainer.accumulate_grad_batches", "gradient accumulation"),
    ("data.max_seq_len", "max tokens per row"),
    ("data.packing", "packing"),
    ("seed", "seed"),
]

# (stats key, label, format) in table order; stats a run did not record are left out
METRICS = [
    ("val_loss_before", "validation loss before training", "{:.4f}"),
    ("val_loss_after", "validation loss after training", "{:.4f}"),
    # then what the method validates beside its loss (the preference methods' accuracy and margin): _metric_rows
    ("steps", "optimizer steps", "{:,}"),
    ("tokens_seen", "tokens seen", "{:,}"),
    ("tokens_per_second", "tokens per second", "{:,.1f}"),
    ("train_seconds", "training time (s)", "{:,.1f}"),
    # with eval.after_train=true: held-out answers of the base model and of this adapter (ftlab.evaluate)
    ("base_eval_exact_match", "exact match, base model", "{:.1%}"),
    ("eval_exact_match", "exact match, with this adapter", "{:.1%}"),
    ("base_eval_rouge_l", "ROUGE-L, base model", "{:.1%}"),
    ("eval_rouge_l", "ROUGE-L, with this adapter", "{:.1%}"),
    # then what evaluation measured on the data's kind of example (a pair's preference accuracy): _metric_rows
]


def render(
    cfg: DictConfig, stats: dict, command: str, *, repo: Optional[str] = None, adapter_config: Optional[dict] = None
) -> str:
    """The README.md of an adapter trained with `cfg`; `repo` is what the usage snippet loads (default:
    hub.repo_id, else a local adapter/ folder); `adapter_config` (its adapter_config.json) adds the vLLM command."""
    base = _get(cfg, "model.name")
    repo = repo or _get(cfg, "hub.repo_id")
    title = repo.rstrip("/").split("/")[-1] if repo else f"LoRA adapter for {base}"
    repo = repo or "path/to/run/adapter"
    parts = [
        _front_matter(cfg),
        f"# {title}\n",
        f"A LoRA adapter of [{base}](https://huggingface.co/{base}) trained with ftlab"
        + (" on a quantised base (QLoRA)" if _get(cfg, "quant.bits") else "")
        + ".\n",
        "## Data\n",
        _data_section(cfg, stats),
        "## Training configuration\n",
        _table(("key", "value", "meaning"), _config_rows(cfg, stats)),
    ]
    metrics = _metric_rows(cfg, stats)
    if metrics:
        parts += ["## Results\n", _table(("metric", "value"), metrics)]
    parts += ["## Reproduce\n", f"```bash\n{command.strip()}\n```\n", "## Use it\n", _usage(repo)]
    if adapter_config is not None:
        parts += ["## Serve it with vLLM\n", _vllm(base, repo, title, adapter_config)]
    return "\n".join(parts)


def write(run_dir: Path, cfg: DictConfig, stats: dict, command: str, *, repo: Optional[str] = None) -> Path:
    """Write run_dir/README.md atomically: a crash or a concurrent push never sees half a card."""
    adapter_dir = Path(run_dir) / "adapter"
    config = vllm.read_adapter_config(adapter_dir) if (adapter_dir / "adapter_config.json").is_file() else None
    return write_text(Path(run_dir) / "README.md", render(cfg, stats, command, repo=repo, adapter_config=config))


def _vllm(base: str, repo: str, title: str, config: dict) -> str:
    return (
        "The adapter folder is what vLLM's LoRA serving takes, unmerged, beside other adapters of the same base:\n\n"
        f"```bash\n{vllm.command(base, title.split()[-1], repo, config)}\n```\n"
    )


def _get(cfg: DictConfig, key: str) -> Any:
    """A config value as plain Python (lists included); None when the key is absent, e.g. in an older config."""
    value = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _front_matter(cfg: DictConfig) -> str:
    tags = ["ftlab", "lora"] + (["qlora"] if _get(cfg, "quant.bits") else [])
    # a JSON string is a valid YAML scalar: quoted, a name with `:` or `#` stays one string
    lines = ["---", "library_name: peft", f"base_model: {json.dumps(str(_get(cfg, 'model.name')))}", "tags:"]
    lines += [f"- {t}" for t in tags] + ["pipeline_tag: text-generation", "---", ""]
    return "\n".join(lines)


def _data_section(cfg: DictConfig, stats: dict) -> str:
    mixed = _get(cfg, "data.sources")
    if mixed:
        weighted = _get(cfg, "data.mix") == "weighted"
        size = (_get(cfg, "data.mix_size") or "as many as the sources have") if weighted else None
        lines = [f"- sources (`data.mix={_get(cfg, 'data.mix')}`" + (f", {size} training examples):" if size else "):")]
        for label, source in zip(source_labels(mixed), mixed):
            weight = f", weight {source['weight']:g}" if weighted else ""
            lines.append(f"  - {label}: {_source(source)}{weight}")
        source = "\n".join(lines)
    else:
        source = f"- source: {_source(_get(cfg, 'data'))}"
    fmt = _get(cfg, "data.format")
    # with data.format=auto the run recorded the format it detected, which is what a reader wants to know
    detected = stats.get("data_format") if fmt == "auto" else None
    fmt_line = f"`{detected}` (detected; `data.format=auto`)" if detected else f"`{fmt}` (`data.format`)"
    loss_line = _method(cfg).loss_on(cfg, detected or fmt)
    return f"{source}\n- format: {fmt_line}\n- loss on: {loss_line}\n"


def _source(data: dict) -> str:
    """A source (data.*, or one of data.sources) as the card names it: a local file by its name and content hash
    (the path stays on this machine), a Hub dataset by its id."""
    path, name, subset = data.get("path"), data.get("name"), data.get("subset")
    if path:
        return f"`{private.described(path)}`"
    return f"`{name}`" + (f" (subset `{subset}`)" if subset else "") if name else "not recorded"


def _method(cfg: DictConfig):
    return METHODS.get(_get(cfg, "method.name") or "sft")  # configs saved before methods existed were SFT


def _config_rows(cfg: DictConfig, stats: dict) -> list:
    rows = [(f"`{key}`", _value(_get(cfg, key)), meaning) for key, meaning in KEY_CONFIG]
    max_steps, steps = _get(cfg, "trainer.max_steps"), stats.get("steps")
    budget = f"{max_steps} (epochs: {_get(cfg, 'trainer.max_epochs')})" if max_steps == -1 else str(max_steps)
    rows.append(
        (
            "`trainer.max_steps` / steps done",
            f"{budget} / {steps if steps is not None else '?'}",
            "step budget and optimizer steps run",
        )
    )
    # the precision the run resolved `auto` to (metrics.json) says more than the configured `auto`
    rows.append(
        ("`trainer.precision`", _value(stats.get("precision") or _get(cfg, "trainer.precision")), "numeric precision")
    )
    method = _method(cfg)
    rows.append(("`method.name`", method.name, "training method"))
    for f in dataclasses.fields(method.Options):
        if f.name != "name":
            rows.append((f"`method.{f.name}`", _value(_get(cfg, f"method.{f.name}")), "method setting"))
    return rows


def _metric_rows(cfg: DictConfig, stats: dict) -> list:
    validated = [
        (f"val_{name}_{when}", f"validation {metric.label} {when} training", "{:.1%}" if metric.percent else "{:.4f}")
        for name, metric in _method(cfg).logged(cfg.method).items()
        if metric.validated
        for when in ("before", "after")
    ]
    measured = [
        (f"{prefix}{key}", f"{label}, {who}", "{:.1%}" if percent else "{:.4f}")
        for kind in KINDS
        for key, (label, percent) in kind.reported.items()
        for prefix, who in (("base_eval_", "base model"), ("eval_", "with this adapter"))
    ]
    sources = source_labels(_get(cfg, "data.sources") or [])
    per_source = [(f"val_loss_{s}_after", f"validation loss after training, {s}", "{:.4f}") for s in sources]
    rows = []
    for key, label, fmt in METRICS[:2] + per_source + validated + METRICS[2:] + measured:
        value = stats.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((label, fmt.format(value)))
    return rows


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _table(header: tuple, rows: list) -> str:
    def line(cells) -> str:
        # a `|` inside a value (a path, say) would split the cell
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows]) + "\n"


def _usage(repo: str) -> str:
    return f"""```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained({json.dumps(repo)})
tokenizer = AutoTokenizer.from_pretrained({json.dumps(repo)})  # with the chat template used in training
messages = [{{"role": "user", "content": "Hello!"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))
```

With ftlab installed, `python -m ftlab.infer run={repo} prompt="Hello!"` loads the base model as it was trained
(from the `ftlab_config.yaml` beside the adapter) and renders the prompt exactly as training did.
"""
