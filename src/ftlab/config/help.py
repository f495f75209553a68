"""`python -m ftlab --help` and docs/options.md: every option with its default, choices and doc.

The docs are the attribute docstrings in schema.py, read from its source, so each is written only once.
"""

import ast
import dataclasses
import functools
import inspect
import typing
from pathlib import Path

from ftlab.config import schema
from ftlab.config.checks import dataclass_of
from ftlab.config.compose import config_dir
from ftlab.utils.files import OUTPUTS_VARIABLE

USAGE = """\
ftlab: LoRA/QLoRA fine-tuning of causal language models from composed config.

usage: python -m ftlab [group=option ...] [key=value ...]
       python -m ftlab ... --cfg job          print the composed config, run nothing
       python -m ftlab -m key=a,b ...         a multirun sweep, one run dir per combination
       python -m ftlab -m sweep=lora          an Optuna sweep (hydra.sweeper.* below)
       python -m ftlab --rerun RUN_DIR [...]  re-run a saved run (RUN_DIR/.hydra/config.yaml)
       python -m ftlab resume=RUN_DIR|last    continue an interrupted run from its checkpoint
       python -m ftlab --hydra-help           Hydra's own flags

examples:
       python -m ftlab model=llama3 quant=4bit lora.r=32 optim.lr=1e-4
       python -m ftlab model=tiny trainer.max_steps=5
       python -m ftlab data=local data.path=train.jsonl trainer.max_epochs=3
       python -m ftlab.preview data=local data.path=train.csv -n 3   check data before training

other commands (each takes --help): ftlab.preview, ftlab.infer, ftlab.evaluate, ftlab.export, ftlab.publish,
ftlab.sweeps report
"""


@functools.cache  # read once per process: --help and docs/options.md ask per section
def _docs() -> dict:
    """{ClassName: {field: doc}} from the string literal under each field in schema.py."""
    tree = ast.parse(inspect.getsource(schema))
    out = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        docs, body = {}, cls.body
        for stmt, after in zip(body, body[1:] + [None]):
            value = getattr(after, "value", None)
            if isinstance(stmt, ast.AnnAssign) and isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs[stmt.target.id] = " ".join(value.value.split())  # one line each
        out[cls.name] = docs
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else str(f.default)
    return str(f.default_factory()) if f.default_factory is not dataclasses.MISSING else "???"


def options(node, prefix: str = "", docs: dict = None):
    """(key=default, {choices}, doc) for every option of a schema dataclass, sections flattened."""
    docs = _docs() if docs is None else docs
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        if f.name.startswith("_"):
            continue
        section = dataclass_of(hints[f.name])  # a section, or an optional one (model.random_init: null by default)
        if section is not None:
            if f.default is None:
                yield f"{prefix}{f.name}=null", "", docs.get(node.__name__, {}).get(f.name, "")
            yield from options(section, f"{prefix}{f.name}.", docs)
            continue
        choices = f.metadata.get("choices")
        allowed = "{" + ", ".join("null" if c is None else str(c) for c in choices) + "}" if choices else ""
        yield f"{prefix}{f.name}={_default(f)}", allowed, docs.get(node.__name__, {}).get(f.name, "")


def option_lines(node, prefix: str = "") -> list:
    """`  key=default {choices}  doc` for every option of a schema dataclass, aligned."""
    rows = [(f"  {name}" + (f" {allowed}" if allowed else ""), doc) for name, allowed, doc in options(node, prefix)]
    width = max(len(name) for name, _ in rows) + 2
    return [f"{name:<{width}}{doc}" for name, doc in rows]


def groups() -> dict:
    """{group: [option, ...]} of conf/, the installed config groups."""
    conf = Path(config_dir())
    found = sorted(p for p in conf.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    return {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in found}


def render() -> str:
    lines = [USAGE, "config groups (group=option; src/ftlab/conf/config.yaml picks the defaults):"]
    lines += [f"  {g}: {', '.join(names)}" for g, names in groups().items()]
    lines += ["", "options (key=default {choices}), declared in src/ftlab/config/schema.py:"]
    lines += option_lines(schema.RunConfig)
    lines += ["", "sweeper options (with sweep=NAME or hydra/sweeper=ftlab_optuna):"]
    lines += option_lines(schema.SweeperOptions, "hydra.sweeper.")
    lines += ["", f"outputs go under outputs/ in the working directory, or ${OUTPUTS_VARIABLE} when set."]
    return "\n".join(lines)


def command_usage(command_cls, prog: str, summary: str) -> str:
    lines = [
        f"{prog}: {summary}",
        "",
        f"usage: python -m {prog} run=RUN [option=value ...] [run config key=value ...]",
        "",
        "options:",
    ]
    lines += option_lines(command_cls)
    lines += [
        "",
        "run config keys override the run's saved config; see python -m ftlab --help, e.g.",
        "  generation.max_new_tokens=64 generation.do_sample=true eval.max_examples=50 quant=4bit",
    ]
    return "\n".join(lines)


def _markdown_table(node, prefix: str = "") -> list:
    rows = ["| option | default | choices | meaning |", "|---|---|---|---|"]
    for name, allowed, doc in options(node, prefix):
        key, _, default = name.partition("=")
        cells = [f"`{key}`", f"`{default}`", allowed.strip("{}"), doc]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows


def options_markdown() -> str:
    """docs/options.md: generated from the schema (a test keeps the file current; `make docs` rewrites it)."""
    parts = [
        "# Options",
        "",
        "Generated from `src/ftlab/config/schema.py` by `make docs`; do not edit by hand. Set any option on the",
        "command line as `key=value`; pick a config group's preset as `group=option`.",
        "",
        "## Config groups",
        "",
        "| group | options |",
        "|---|---|",
    ]
    parts += [f"| `{g}` | {', '.join(f'`{n}`' for n in names)} |" for g, names in groups().items()]
    sections = [
        ("Run config (`python -m ftlab`)", schema.RunConfig, ""),
        ("Sweeper (`sweep=NAME` or `hydra/sweeper=ftlab_optuna`)", schema.SweeperOptions, "hydra.sweeper."),
        ("`python -m ftlab.infer`", schema.InferCommand, ""),
        ("`python -m ftlab.evaluate`", schema.EvaluateCommand, ""),
        ("`python -m ftlab.export`", schema.ExportCommand, ""),
    ]
    for title, node, prefix in sections:
        parts += ["", f"## {title}", ""]
        doc = inspect.getdoc(node)
        if node.__doc__ and doc and not doc.startswith(node.__name__ + "("):
            parts += [doc, ""]
        parts += _markdown_table(node, prefix)
    return "\n".join(parts) + "\n"
