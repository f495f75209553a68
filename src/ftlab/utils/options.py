"""Options as dataclass fields that carry their own constraints, so the validator and --help read them off the
declaration: the run schema (config/schema.py) and every room that declares options of its own (a method's
section, a data format's columns, a tracker's settings) use the same helper.

    lr: float = opt(2e-4, gt=0, example="optim.lr=2e-4")
    \"\"\"Peak learning rate.\"\"\"            # the doc: the string right under the field, read from the source
"""

import ast
import dataclasses
import functools
import inspect
import sys
from typing import Any, Callable, Dict, Union

from omegaconf import MISSING

Choices = Union[list, Callable[[], list]]


def opt(
    default: Any = MISSING,
    *,
    choices: Choices = None,
    gt=None,
    ge=None,
    lt=None,
    le=None,
    example=None,
    shapes_tokens=True,
):
    """A dataclass field carrying its constraints. `choices` may be a function, for lists that grow as rooms are
    registered (the methods, the data formats). shapes_tokens=False marks a data option that does not change the
    tokenized data (batch size, say): the preprocessing cache keys on every other data option."""
    meta = dict(choices=choices, gt=gt, ge=ge, lt=lt, le=le, example=example)
    meta = {k: v for k, v in meta.items() if v is not None}
    if not shapes_tokens:
        meta["shapes_tokens"] = False
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def choices(f: dataclasses.Field):
    """The allowed values of a field, or None when any value of its type is allowed."""
    allowed = f.metadata.get("choices")
    return allowed() if callable(allowed) else allowed


@functools.cache  # read once per class: --help and docs/options.md ask per section
def docs(cls: type) -> Dict[str, str]:
    """{field: doc} of a dataclass: the string literal under each field in its source (LitGPT's attribute
    docstrings), one line each, or a field's metadata["doc"] (a dataclass assembled in code); its bases' docs for
    the fields it inherits."""
    out = {}
    for base in reversed(cls.__mro__[1:]):  # a subclass inherits its parents' docs, as it inherits their fields
        if dataclasses.is_dataclass(base):
            out.update(docs(base))
    out.update(_source_docs(cls))
    out.update({f.name: f.metadata["doc"] for f in dataclasses.fields(cls) if "doc" in f.metadata})
    return out


def _source_docs(cls: type) -> Dict[str, str]:
    return _module_docs(cls.__module__).get(cls.__qualname__, {})


@functools.cache  # one parse per module, not one per class (inspect.getsource re-parses the module for each)
def _module_docs(module: str) -> Dict[str, Dict[str, str]]:
    """{class qualname: {field: doc}} for every class in a module's source; {} for a module without source."""
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module]))
    except (OSError, TypeError, KeyError):  # assembled in code, or defined interactively: no source
        return {}
    out = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                out[prefix + node.name] = _field_docs(node)
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return out


def _field_docs(body: ast.ClassDef) -> Dict[str, str]:
    out = {}
    for stmt, after in zip(body.body, body.body[1:] + [None]):
        value = getattr(after, "value", None)
        if isinstance(stmt, ast.AnnAssign) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            out[stmt.target.id] = " ".join(value.value.split())
    return out
