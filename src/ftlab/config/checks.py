"""Validate a composed config against the schema: unknown keys, types, declared bounds, combinations.

Every rule either reads a constraint declared beside its option (in schema.py, or in the room that declares it:
a method's options) or is one of the cross-option rules in `_combination_errors` and the method's own `checks`.
Messages name the override that fixes them.
"""

import dataclasses
import re
import typing

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ftlab.config.schema import RunConfig, SourceOptions, SweeperOptions, run_config
from ftlab.data import rows
from ftlab.methods import METHODS, Method
from ftlab.utils.errors import ConfigError, first_line
from ftlab.utils.options import choices

_OPS = {
    "gt": (">", lambda v, b: v > b),
    "ge": (">=", lambda v, b: v >= b),
    "lt": ("<", lambda v, b: v < b),
    "le": ("<=", lambda v, b: v <= b),
}


def _show(value) -> str:
    return "null" if value is None else str(value)


def field_errors(node, prefix: str):
    """Yield a message for each declared constraint that `node` (a schema dataclass) breaks."""
    for f in dataclasses.fields(node):
        key, value, meta = f"{prefix}{f.name}", getattr(node, f.name), f.metadata
        if dataclasses.is_dataclass(value):
            yield from field_errors(value, key + ".")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):  # data.sources
            for i, item in enumerate(value):
                yield from field_errors(item, f"{key}.{i}.")
            continue
        hint = f"; e.g. {meta['example']}" if "example" in meta else ""
        allowed = choices(f)
        if allowed is not None and value not in allowed:
            yield f"{key} must be one of {', '.join(_show(c) for c in allowed)} (got {_show(value)})"
        for op, (sign, ok) in _OPS.items():
            if op in meta and value is not None and not ok(value, meta[op]):
                yield f"{key} must be {sign} {meta[op]} (got {_show(value)}){hint}"


def _combination_errors(c: RunConfig, method: Method):
    """Rules that involve more than one option."""
    if c.trainer.max_steps == -1 and c.trainer.max_epochs == -1:
        yield "trainer.max_steps and trainer.max_epochs are both -1 (unbounded); set one, e.g. trainer.max_steps=100"
    if c.trainer.accelerator == "cpu" and c.trainer.precision == "16-mixed":
        yield "trainer.precision=16-mixed needs a GPU; on CPU use trainer.precision=bf16-mixed or 32-true"
    if c.trainer.accelerator == "cpu" and c.model.attn_implementation == "flash_attention_2":
        yield "model.attn_implementation=flash_attention_2 needs a CUDA GPU; on CPU use sdpa (or trainer=gpu)"
    if c.trainer.accelerator == "cpu" and c.model.liger_kernels:
        yield "model.liger_kernels=true needs a CUDA GPU (Triton kernels); on CPU set model.liger_kernels=false"
    yield from _strategy_errors(c)
    yield from _method_errors(c, method)
    if c.quant.bits is not None and c.lora.init_weights in ("pissa", "olora"):
        yield (
            f"lora.init_weights={c.lora.init_weights} rewrites the base weights and cannot be combined "
            f"with quant.bits={c.quant.bits}; use quant=none or lora.init_weights=default"
        )
    if c.model.random_init is not None and c.model.gguf_file is not None:
        yield "model.random_init builds a fresh model, so model.gguf_file must be null"
    arch = c.model.random_init
    if arch is not None and (arch.hidden_size % arch.num_heads or arch.num_heads % arch.num_kv_heads):
        yield (
            "model.random_init: num_heads must divide hidden_size and num_kv_heads must divide num_heads "
            f"(got {arch.hidden_size}, {arch.num_heads}, {arch.num_kv_heads})"
        )
    d = c.data
    yield from _sources_errors(d) if d.sources else _source_errors(d, "data")
    if not d.sources and (d.mix != "concat" or d.mix_size):
        yield "data.mix and data.mix_size mix the datasets of data.sources; list yours there (docs/data.md)"
    yield from _size_errors(d, "data")
    if d.packing and d.group_by_length:
        yield "data.group_by_length only applies without packing; set one of them to false"
    if c.hub.push and not c.hub.repo_id:
        yield "hub.push=true needs hub.repo_id, e.g. hub.repo_id=your-name/smollm2-demo-lora"
    if not c.lora.target_modules:
        yield "lora.target_modules is empty; e.g. lora.target_modules=[all-linear]"
    if len(c.optim.betas) != 2 or not all(0 <= b < 1 for b in c.optim.betas):
        yield f"optim.betas must be two numbers in [0, 1) (got {list(c.optim.betas)})"


def _source_errors(s, key: str):
    """Where the rows of one source come from: data.*, or data.sources.N.*."""
    if (s.path is None) == (s.name is None):
        several = " (or several: data=mix data.sources=[{path:A},{name:B}])" if key == "data" and not s.path else ""
        yield (
            f"{'data needs exactly one source' if key == 'data' else key + ' needs exactly one of path and name'}: "
            f"{key}.path=FILE_OR_FOLDER or {key}.name=HUB_DATASET{several} (got {'both' if s.path else 'neither'})"
        )
    if s.subset is not None and s.name is None:
        yield f"{key}.subset selects a configuration of a Hub dataset, so it needs {key}.name"
    for name in ("val_path", "test_path"):
        if getattr(s, name) is not None and s.path is None:
            yield (
                f"{key}.{name} is a local file, used with {key}.path; with {key}.name the dataset's own splits are used"
            )


def _size_errors(s, key: str):
    """data.val_size/test_size, or a source's (null there: the run's): a fraction below 1 or a whole row count."""
    for name in ("val_size", "test_size"):
        size = getattr(s, name)
        if size is not None and size >= 1 and size != int(size):
            yield f"{key}.{name} is a fraction below 1 or a whole row count (got {size})"


def _sources_errors(d):
    """data.sources: each source, their labels, and the mixing rule."""
    if d.path is not None or d.name is not None:
        yield (
            "set either data.path/data.name or data.sources, not both; a data group such as the default data=demo "
            "sets data.path: pick data=mix (or add data.path=null)"
        )
    for name in ("subset", "val_path", "test_path"):
        if getattr(d, name) is not None:
            yield f"data.{name} belongs to one source; with data.sources set data.sources.N.{name}"
    labels = rows.labels(d.sources)
    for i, (source, label) in enumerate(zip(d.sources, labels)):
        key = f"data.sources.{i}"
        yield from _source_errors(source, key)
        yield from _size_errors(source, key)
        if not rows.LABEL.fullmatch(label):
            yield f"{key}.label={label}: use letters, digits, -, _ and . (it names the metric val/loss_<label>)"
        if label in labels[:i]:
            yield (
                f"{key} and data.sources.{labels.index(label)} are both labelled {label}; name one apart, e.g. "
                f"{key}.label={label}_{i}"
            )
        if d.mix == "concat" and source.weight != 1:
            yield (
                f"{key}.weight={source.weight:g}: data.mix=concat takes every example of every source, so weights "
                "stay 1; set data.mix=weighted to draw by weight"
            )
    if d.mix == "concat" and d.mix_size:
        yield "data.mix_size sizes a weighted mix; set data.mix=weighted, or data.mix_size=0 with data.mix=concat"


def _method_errors(c: RunConfig, method: Method):
    """The method's own rules, and options it cannot honour."""
    yield from method.checks(c)
    if c.data.packing and not method.packs:
        packers = "|".join(m.name for m in METHODS if m.packs)
        yield (
            f"data.packing packs single examples for method={packers}; method={method.name} compares whole answers: "
            "data.packing=false"
        )
    if c.model.liger_kernels and not method.fused_loss:
        fused = "|".join(m.name for m in METHODS if m.fused_loss)
        yield (
            f"model.liger_kernels' fused loss is method={fused}'s; with method={method.name} set "
            "model.liger_kernels=false"
        )


def _strategy_errors(c: RunConfig):
    """Combinations of trainer.strategy with other options that cannot work."""
    if c.trainer.strategy != "fsdp":
        return
    if c.trainer.accelerator == "cpu":
        yield "trainer.strategy=fsdp needs CUDA GPUs (trainer=gpu or trainer=fsdp); on CPU use trainer.strategy=ddp"
    if c.quant.bits == 8:
        yield (
            "trainer.strategy=fsdp cannot shard 8-bit weights (quant.bits=8); use quant.bits=4 (QLoRA shards "
            "under FSDP) or trainer.strategy=ddp"
        )
    if c.model.gradient_checkpointing:
        yield (
            "model.gradient_checkpointing under trainer.strategy=fsdp checkpoints twice; set "
            "model.gradient_checkpointing=false and trainer.fsdp.activation_checkpointing=true"
        )
    if c.eval.after_train:
        yield (
            "eval.after_train generates with the whole model on one device, which trainer.strategy=fsdp shards; "
            "set eval.after_train=false and run python -m ftlab.evaluate run=RUN_DIR after training"
        )


def validate(cfg: DictConfig) -> DictConfig:
    """Merge `cfg` into the schema and check it; return the typed, read-only config or raise ConfigError."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)  # only the task config is ours to check
    method = method_of(container)
    schema = run_config(method.name)
    unknown = next(unknown_keys(container, schema, ""), None)
    if unknown is not None:  # Hydra's +key=value adds keys that merging into the schema would not refuse
        raise ConfigError(describe_unknown_key(unknown, method.name))
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), container)
        obj = OmegaConf.to_object(typed)
    except OmegaConfBaseException as e:
        raise ConfigError(describe_omegaconf_error(e)) from None
    problems = list(field_errors(obj, "")) + list(_combination_errors(obj, method))
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    OmegaConf.set_readonly(typed, True)
    return typed


def method_of(container: dict) -> Method:
    """The method a plain config names (method.name, sft when it names none), or ConfigError listing them."""
    section = container.get("method")
    name = section.get("name", "sft") if isinstance(section, dict) else "sft"
    if name not in METHODS:
        raise ConfigError(f"method={name}: no such option; choose one of: {', '.join(METHODS.names())}")
    return METHODS.get(name)


def validate_sweeper(node: DictConfig) -> SweeperOptions:
    """The sweeper's settings (hydra.sweeper) against their schema, each error naming its key."""
    container = OmegaConf.to_container(node, resolve=False)
    unknown = next(unknown_keys(container, SweeperOptions, "hydra.sweeper."), None)
    if unknown is not None:
        raise ConfigError(describe_unknown_key(unknown))
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweeperOptions), container))
    except OmegaConfBaseException as e:
        raise ConfigError(f"hydra.sweeper.{describe_omegaconf_error(e)}") from None
    problems = list(field_errors(obj, "hydra.sweeper."))
    if problems:
        raise ConfigError(problems[0])
    return obj


def unknown_keys(node, schema, prefix: str):
    """Yield the dotted keys of a plain config `node` (dicts) that `schema` (a dataclass) does not declare."""
    declared = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key, value in node.items():
        if key not in declared:
            yield f"{prefix}{key}"
            continue
        inner = dataclass_of(hints[key])
        if inner is not None and isinstance(value, dict):
            yield from unknown_keys(value, inner, f"{prefix}{key}.")
        elif inner is not None and isinstance(value, list):  # data.sources
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    yield from unknown_keys(item, inner, f"{prefix}{key}.{i}.")


def dataclass_of(hint):
    """The dataclass behind a field's type (`X`, `Optional[X]` or a list of X: data.sources), or None for anything
    else."""
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def describe_unknown_key(key: str, method: str = "sft") -> str:
    """One line for a key no option declares; `method`: the run's, whose own keys the method.* section holds."""
    parent, _, name = key.rpartition(".")
    if parent == "method":
        users = [m.name for m in METHODS if name in {f.name for f in dataclasses.fields(m.Options)}]
        if users and method not in users:
            return (
                f"method.{name} is read by method={'|'.join(users)} only, and this run is method={method}; "
                f"drop method.{name} or pick method={users[0]}"
            )
    known = ", ".join(_schema_fields(parent, method))
    where = f"keys under {parent}" if parent else "top-level keys"
    return f"unknown key {key}: not an ftlab option" + (f"; {where}: {known}" if known else "")


def describe_omegaconf_error(e: OmegaConfBaseException) -> str:
    """OmegaConf explains type and key errors over several lines; keep the line that matters and the key."""
    first = first_line(e)
    key = re.sub(r"\[(\d+)\]", r".\1", getattr(e, "full_key", None) or "")  # data.sources[0].x: data.sources.0.x
    if isinstance(getattr(e, "object_type", None), type) and issubclass(e.object_type, SourceOptions):
        key = key if key.startswith("data.sources.") else f"data.sources.N.{key}"  # a source given whole
    owner = next((m.name for m in METHODS if m.Options is getattr(e, "object_type", None)), "sft")
    unknown = first.startswith("Key '") and "not in" in first
    if unknown or (first.startswith("Could not override") and key.startswith("method.")):
        return describe_unknown_key(key, owner)
    if "missing mandatory value" in first.lower():
        return f"{key} is required and has no value; e.g. {_example(key) or key + '=...'}"
    example = _example(key)
    return (f"{key}: {first}" if key else first) + (f"; e.g. {example}" if example else "")


def schema_field(key: str, schema=None):
    """The dataclass field declaring `key` (dotted) in `schema` (RunConfig, its method section any method's), or
    None."""
    if schema is None and key.startswith("method."):
        return next((f for m in METHODS if (f := schema_field(key, run_config(m.name))) is not None), None)
    schema = schema or run_config("sft")
    parent, _, name = key.rpartition(".")
    node = _section(parent, schema)
    return {f.name: f for f in dataclasses.fields(node)}.get(name) if node else None


def _section(key: str, schema):
    """The dataclass that the dotted `key` names inside `schema` ("" is `schema` itself), or None."""
    node, indexed = schema, False
    for part in key.split(".") if key else []:
        if indexed:  # the index of an item of a list (data.sources.0): the item's dataclass is already `node`
            indexed = False
            continue
        if node is None or part not in {f.name for f in dataclasses.fields(node)}:
            return None
        hint = typing.get_type_hints(node)[part]
        indexed = typing.get_origin(hint) is list
        node = dataclass_of(hint)
    return None if indexed else node  # a list itself has no fields, only its items


def _schema_fields(parent: str, method: str = "sft") -> list:
    schema, prefix = (
        (SweeperOptions, "hydra.sweeper") if parent.startswith("hydra.sweeper") else (run_config(method), "")
    )
    node = _section(parent[len(prefix) :].lstrip("."), schema)
    return [f.name for f in dataclasses.fields(node) if not f.name.startswith("_")] if node else []


def _example(key: str):
    f = schema_field(key)
    return f.metadata.get("example") if f is not None else None
