"""The command line of the run-using commands (infer, evaluate, export): `key=value` words, as in training.

A word sets either one of the command's own options (InferCommand, ... in schema.py) or a key of the run's
saved config, which it overrides: `generation.max_new_tokens=64`, `eval.split=validation`, `quant=4bit` (a whole
group, from conf/), `data.test_path=other.jsonl`. The merged run config is validated like a training config.
"""

import dataclasses
import sys
import typing
from typing import Callable, List, Optional, Tuple

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf

from ftlab.config.checks import field_errors, method_of, validate
from ftlab.config.compose import group_option, groups, setup
from ftlab.config.help import command_usage
from ftlab.config.schema import RunConfig
from ftlab.utils.errors import ConfigError, exit_on_error

RUN_KEYS = [f.name for f in dataclasses.fields(RunConfig)]


def _is_text(cls, name: str) -> bool:
    """Text options keep the word as typed: a prompt like `Note: x` must not be read as YAML."""
    hint = typing.get_type_hints(cls)[name]
    return hint is str or hint == typing.Optional[str]


def _value(text: str, keep_text: bool):
    if keep_text:
        return None if text == "null" else text
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def _section(command_cls, name: str):
    """The dataclass of the command's option `name` when it is a section of options, else None."""
    declared = command_cls.__dataclass_fields__.get(name)
    return declared.type if declared is not None and dataclasses.is_dataclass(declared.type) else None


def parse(argv: List[str], command_cls) -> Tuple[object, List[str]]:
    """(the command's options, overrides of the run config) from `argv`; ConfigError names the bad word."""
    own = {f.name for f in dataclasses.fields(command_cls)}
    values, overrides = {}, []
    for word in argv:
        key, eq, text = word.partition("=")
        if not eq or not key:
            first = dataclasses.fields(command_cls)[0]
            example = first.metadata.get("example", f"{first.name}=...")
            raise ConfigError(f"'{word}' is not key=value; e.g. {example}")
        head, dot, rest = key.partition(".")
        section = _section(command_cls, head)
        if key in own and section is None:
            values[key] = _value(text, _is_text(command_cls, key))
        elif dot and section is not None:  # gguf.dtype=q8_0: a key of one of the command's sections
            known = [f.name for f in dataclasses.fields(section)]
            if rest not in known:
                keys = ", ".join(f"{head}.{k}" for k in known)
                raise ConfigError(f"unknown option '{key}'; the {head} options are {keys}")
            values.setdefault(head, {})[rest] = _value(text, _is_text(section, rest))
        elif key in own:  # endpoint=URL: a section named alone sets its first option
            first = dataclasses.fields(section)[0].name
            values.setdefault(head, {})[first] = _value(text, _is_text(section, first))
        elif key.lstrip("+").split(".")[0] in RUN_KEYS:
            overrides.append(word)
        else:
            raise ConfigError(
                f"unknown option '{key}'; the options are {', '.join(sorted(own))}, and keys of the run's config "
                "(e.g. generation.max_new_tokens=64, quant=4bit)"
            )
    missing = [f.name for f in dataclasses.fields(command_cls) if f.default == MISSING and f.name not in values]
    if missing:
        example = command_cls.__dataclass_fields__[missing[0]].metadata.get("example", f"{missing[0]}=...")
        raise ConfigError(f"{missing[0]}= is required; e.g. {example}")
    for name, given in list(values.items()):  # a section's keys (gguf.dtype=...) make its dataclass
        if isinstance(given, dict) and _section(command_cls, name) is not None:
            values[name] = _section(command_cls, name)(**given)
    try:
        options = command_cls(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None
    for name, hint in typing.get_type_hints(command_cls).items():  # dataclasses do not check types themselves
        value = getattr(options, name)
        if hint is bool and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false (got {value})")
    problems = list(field_errors(options, ""))
    if problems:
        raise ConfigError(problems[0])
    return options, overrides


def apply_overrides(cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """`cfg` (a saved run config) with `group=option` and `a.b=value` overrides applied, validated."""
    setup()  # saved configs may hold ${ftlab.*} interpolations
    cfg = OmegaConf.create(_upgraded(OmegaConf.to_container(cfg)))
    for word in overrides:
        key, _, text = word.partition("=")
        key = key.lstrip("+")  # a key added with + meets the same schema check as any other
        if key in RUN_KEYS and key in groups():  # a config group (model=, tracker=, method= ...), not a sweep preset
            # a whole group replaces the saved one (merging would keep keys the new option does not set)
            cfg[key] = group_option(key, text)
        else:
            try:
                OmegaConf.update(cfg, key, _value(text, keep_text=False), merge=True)
            except Exception as e:  # OmegaConf's errors for a key path through a non-mapping value
                raise ConfigError(f"{word}: {e}") from None
    return validate(cfg)


def _upgraded(saved: dict) -> dict:
    """A config saved before each method had its own section carries every method's keys, at their defaults (the
    validation of the time refused any other value for a key the method does not read): the method's own are kept."""
    method = saved.get("method")
    if isinstance(method, dict) and "name" in method:
        own = {f.name for f in dataclasses.fields(method_of(saved).Options)}
        saved = {**saved, "method": {k: v for k, v in method.items() if k in own}}
    return saved


def run_command(argv: Optional[List[str]], command_cls, prog: str, summary: str, body: Callable) -> None:
    """The main of a run-using command: --help, parsing, then `body(options, overrides)` under the exit policy."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(command_usage(command_cls, prog, summary))
        return
    with exit_on_error(prog):
        body(*parse(argv, command_cls))
