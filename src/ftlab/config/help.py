"""`python -m ftlab --help` and docs/options.md: every option with its default, choices and doc.

The docs are the attribute docstrings under each field, read from the source of the dataclass that declares it
(schema.py, a method's options, a data format's columns), so each is written only once.
"""

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Dict, Optional

import yaml

from ftlab.config import schema
from ftlab.config.checks import dataclass_of
from ftlab.config.compose import config_dir, groups
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
SEARCH_SPACE = """\
search space (hydra.sweeper.params.KEY in a preset, or 'KEY=...' on a command line with -m):
  choice(4, 8, 16)                 one of these values
  interval(0.0, 0.2)               a number between the bounds (a whole number where both bounds are whole)
  tag(log, interval(1e-5, 1e-3))   the same, drawn on a log scale
  range(2, 9, step=2)              a whole number from lo up to hi, hi left out, in steps of step: 2, 4, 6, 8
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
            if typing.get_origin(hints[f.name]) is list:  # data.sources: the list, then the keys of each item
                yield f"{prefix}{f.name}=[]", "", doc.get(f.name, "")
                yield from options(section, f"{prefix}{f.name}.N.")
                continue
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


def _shown(value) -> str:
    """A YAML value as _default shows a schema default, so the two compare as text."""
    return "null" if value is None else str(value)


def _same(a: str, b: str) -> bool:
    """Two shown values alike, whole numbers and floats compared as numbers (a YAML 32 sets a float option 32.0)."""
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def _flat(node: dict, prefix: str = "") -> Dict[str, object]:
    flat = {}
    for key, value in (node or {}).items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def group_values() -> Dict[str, Dict[str, Dict[str, str]]]:
    """{group: {option: {key: value}}} of what each option of a config group (a YAML file of conf/) sets, and
    {group: {"": default option}} under the key "" of each: what --help shows as the default a run gets. Read
    from the files themselves, not composed: --help stays fast."""
    conf = Path(config_dir())
    picked = {}
    for entry in yaml.safe_load((conf / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            ((group, option),) = entry.items()
            if (conf / str(group)).is_dir() and option is not None:  # not sweep: null, not an override of hydra's
                picked[group] = option
    found = {}
    for group, default in picked.items():
        files = sorted((conf / group).glob("*.yaml"))
        found[group] = {f.stem: {k: _shown(v) for k, v in _flat(yaml.safe_load(f.read_text())).items()} for f in files}
        found[group][""] = {"": default}
    return found


def _by_group(name: str, schema_default: str, values) -> tuple:
    """(the default a run gets, a note naming the group options that set another value, or "") of option `name`."""
    group, _, key = name.partition(".")
    if values is None or group not in values:
        return schema_default, ""
    options = values[group]
    default = options[""][""]
    got = {o: sets.get(key, schema_default) for o, sets in options.items() if o}
    shown = got.get(default, schema_default)
    others: Dict[str, list] = {}
    for option, value in got.items():
        if not _same(value, shown):
            others.setdefault(value, []).append(option)
    if not others or any(len(v) > 24 for v in others):  # a long value (a model's Hub id) is better read in --cfg job
        return shown, ""
    if len(others) > 1 and all(len(o) == 1 for o in others.values()):  # each option its own: the option's name says it
        return shown, ""
    return shown, " (" + "; ".join(f"{group}={'|'.join(o)}: {v}" for v, o in others.items()) + ")"


def option_lines(node, prefix: str = "", values: Optional[dict] = None) -> list:
    """`  key=default {choices}  doc` for every option of a schema dataclass, aligned. With `values`
    (group_values()), the default is what the default config groups set, followed by the other options' values."""
    rows = []
    for name, allowed, doc in options(node, prefix):
        key, eq, default = name.partition("=")
        note = ""
        if eq and allowed != PICKS:
            default, note = _by_group(key, default, values)
            name = f"{key}={default}"
        rows.append((f"  {name}" + (f" {allowed}" if allowed and allowed != PICKS else "") + note, doc))
    width = max(len(name) for name, _ in rows) + 2
    return [f"{name:<{width}}{doc}" for name, doc in rows]


def render() -> str:
    lines = [USAGE, "config groups (group=option; src/ftlab/conf/config.yaml picks the defaults):"]
    lines += [f"  {g}: {', '.join(names)}" for g, names in groups().items()]
    lines += [
        "",
        "options (key=default {choices}), declared in src/ftlab/config/schema.py. The default is what a run gets with",
        "the default groups; a group option that sets a key otherwise follows it, e.g. (data=hub|local: 1024), and",
        "??? marks a key to set. python -m ftlab GROUP=OPTION --cfg job shows all that an option sets.",
    ]
    lines += option_lines(schema.RunConfig, values=group_values())
    lines += ["", "sweeper options (with sweep=NAME or hydra/sweeper=ftlab_optuna):"]
    lines += option_lines(schema.SweeperOptions, "hydra.sweeper.")
    lines += ["", SEARCH_SPACE.rstrip("\n")]
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
        ("`python -m ftlab.plan`", schema.PlanCommand, ""),
    ]
    for title, node, prefix in sections:
        parts += ["", f"## {title}", ""]
        doc = inspect.getdoc(node)
        if node.__doc__ and doc and not doc.startswith(node.__name__ + "("):
            parts += [doc, ""]
        parts += _markdown_table(node, prefix)
    return "\n".join(parts) + "\n"
