"""`python -m ftlab --help`: usage, config groups and every option with its default and doc.

The docs are the attribute docstrings in config.py, read from its source, so they are written only once.
"""
import ast
import dataclasses
import inspect
from pathlib import Path

from ftlab import config
from ftlab.configure import config_dir

USAGE = """\
ftlab: LoRA/QLoRA fine-tuning of causal language models from composed config.

usage: python -m ftlab [group=option ...] [key=value ...]
       python -m ftlab ... --cfg job          print the composed config, run nothing
       python -m ftlab -m key=a,b ...         a multirun sweep, one run dir per combination
       python -m ftlab --rerun RUN_DIR [...]  re-run a saved run (RUN_DIR/.hydra/config.yaml)
       python -m ftlab resume=RUN_DIR|last    continue an interrupted run from its checkpoint
       python -m ftlab --hydra-help           Hydra's own flags

examples:
       python -m ftlab model=llama3 quant=4bit lora.r=32 optim.lr=1e-4
       python -m ftlab model=tiny trainer.max_steps=5
       python -m ftlab data=local data.path=train.jsonl trainer.max_epochs=3
       python -m ftlab.preview data=local data.path=train.csv -n 3   check data before training
"""


def _docs() -> dict:
    """{ClassName: {field: doc}} from the string literal under each field in config.py."""
    tree = ast.parse(inspect.getsource(config))
    out = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        docs, body = {}, cls.body
        for stmt, after in zip(body, body[1:] + [None]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(after, ast.Expr) and \
                    isinstance(getattr(after, "value", None), ast.Constant) and isinstance(after.value.value, str):
                docs[stmt.target.id] = " ".join(after.value.value.split())  # one line each
        out[cls.name] = docs
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else str(f.default)
    return str(f.default_factory()) if f.default_factory is not dataclasses.MISSING else "???"


def _options(node, prefix: str, docs: dict):
    for f in dataclasses.fields(node):
        if dataclasses.is_dataclass(f.type):
            yield from _options(f.type, f"{prefix}{f.name}.", docs)
            continue
        choices = f.metadata.get("choices")
        allowed = f" {{{', '.join('null' if c is None else str(c) for c in choices)}}}" if choices else ""
        yield f"  {prefix}{f.name}={_default(f)}{allowed}", docs.get(node.__name__, {}).get(f.name, "")


def render() -> str:
    conf = Path(config_dir())
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    lines = [USAGE, "config groups (group=option; the first listed in conf/config.yaml is the default):"]
    lines += [f"  {g}: {', '.join(sorted(f.stem for f in (conf / g).glob('*.yaml')))}" for g in groups]
    lines += ["", "options (key=default {choices}), declared in src/ftlab/config.py:"]
    lines += option_lines(config.FTConfig)
    return "\n".join(lines)


def option_lines(schema) -> list:
    """`  key=default {choices}  doc` for every option of a schema dataclass, aligned."""
    options = list(_options(schema, "", _docs()))
    width = max(len(name) for name, _ in options) + 2
    return [f"{name:<{width}}{doc}" for name, doc in options]
