"""`python -m ftlab --help` and docs/options.md: every option with its default, choices and doc.

The docs are the attribute docstrings under each field, read from the source of the dataclass that declares it
(schema.py, a method's options, a data format's columns), so each is written only once.
"""

import dataclasses
import inspect
import typing

from ftlab.config import schema
from ftlab.config.checks import dataclass_of
from ftlab.config.compose import groups
from ftlab.methods import METHODS
from ftlab.utils.files import OUTPUTS_VARIABLE
from ftlab.utils.options import choices, docs

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


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "null" if f.default is None else str(f.default)
    return str(f.default_factory()) if f.default_factory is not dataclasses.MISSING else "???"


def options(node, prefix: str = ""):
    """(key=default, {choices}, doc) for every option of a schema dataclass, sections flattened; the method section
    once per method, under the method=NAME that selects it."""
    hints, doc = typing.get_type_hints(node), docs(node)
    for f in dataclasses.fields(node):
        if f.name.startswith("_"):
            continue
        if node is schema.RunConfig and f.name == "method":
            for method in METHODS:
                yield f"method={method.name}", PICKS, method.summary
                yield from (o for o in options(method.Options, "method.") if not o[0].startswith("method.name="))
            continue
        # a section, an optional one (model.random_init: null by default) or one assembled from the rooms (columns)
        section = dataclass_of(hints[f.name]) or _assembled(f)
        if section is not None:
            if f.default is None:
                yield f"{prefix}{f.name}=null", "", doc.get(f.name, "")
            yield from options(section, f"{prefix}{f.name}.")
            continue
        allowed = choices(f)
        shown = "{" + ", ".join("null" if c is None else str(c) for c in allowed) + "}" if allowed else ""
        yield f"{prefix}{f.name}={_default(f)}", shown, doc.get(f.name, "")


PICKS = "(picks)"  # marks the row of a method=NAME: the option that picks it, its own keys after it


def _assembled(f: dataclasses.Field):
    """The dataclass of a field typed Any whose default is built from the rooms (data.columns), or None."""
    if f.default_factory is dataclasses.MISSING:
        return None
    default = f.default_factory()
    return type(default) if dataclasses.is_dataclass(default) else None


def option_lines(node, prefix: str = "") -> list:
    """`  key=default {choices}  doc` for every option of a schema dataclass, aligned."""
    rows = [
        (f"  {name}" + (f" {allowed}" if allowed and allowed != PICKS else ""), doc)
        for name, allowed, doc in options(node, prefix)
    ]
    width = max(len(name) for name, _ in rows) + 2
    return [f"{name:<{width}}{doc}" for name, doc in rows]


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
        if allowed == PICKS:  # a method: the option that picks it, then its own keys
            cells = [f"`{name}`", "", "", doc]
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
        ("`python -m ftlab.serve`", schema.ServeCommand, ""),
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
