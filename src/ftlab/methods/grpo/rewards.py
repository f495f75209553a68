"""Reward functions named in the config, checked before anything runs and called on each batch of completions.

    method.rewards=[{fn: exact_match, weight: 1.0}, {fn: "mypkg.rewards:has_steps", weight: 0.5}]

`fn` is a shipped reward (builtin.py: exact_match, regex, json_valid, tool_call, length) or `module:function`
(`module.function` too). The call is TRL's, so a reward written for TRL works unchanged:

    fn(prompts=[...], completions=[...], completion_ids=[...], **columns) -> list of float or None

one entry per completion, in order; None means "does not apply" and leaves the completion out of that function's
mean and of its weighted sum. prompts and completions are text where the data's prompt is text, and messages
where it is messages ([{"role": "assistant", "content": ...}] per completion). Every other column of a row comes
by name (reference: the reference answer), one value per completion. A function without **kwargs is given only
the arguments it names. Any other key of an entry (`pattern: ...`) is passed to the function as an argument.
"""

import importlib
import inspect
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ftlab.utils.errors import ConfigError, StepError

BUILTIN = "ftlab.methods.grpo.builtin"
GIVEN = ("prompts", "completions", "completion_ids")
"""What every call brings besides the rows' columns."""
ENTRY_KEYS = ("fn", "weight", "name")


@dataclass
class Reward:
    name: str
    """How logs and reports name it: `name`, else the function's name."""
    fn: Callable
    weight: float
    key: str
    """method.rewards[i], for messages."""
    bound: dict
    """The entry's other keys, passed as arguments."""
    takes: Optional[frozenset]
    """The argument names it accepts; None: any (it has **kwargs)."""

    def __call__(self, prompts: list, completions: list, completion_ids: list, columns: Dict[str, list]) -> list:
        given = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **columns}
        if self.takes is not None:
            given = {k: v for k, v in given.items() if k in self.takes}
        return self.fn(**given, **self.bound)


def entries(cfg_rewards) -> List[dict]:
    """The method.rewards entries as plain dicts; ConfigError for one that is not a mapping."""
    out = []
    for i, entry in enumerate(cfg_rewards or []):
        if hasattr(entry, "items"):
            out.append(dict(entry.items()))
        elif isinstance(entry, str):  # a bare name: weight 1
            out.append({"fn": entry})
        else:
            raise ConfigError(
                f"method.rewards[{i}] must be a mapping like {{fn: exact_match, weight: 1.0}}, got {entry!r}"
            )
    return out


def resolve(cfg_rewards) -> List[Reward]:
    """The rewards of method.rewards, each imported and its signature and weight checked; ConfigError naming the
    key and the fix for the first that fails."""
    rewards, names = [], set()
    for i, entry in enumerate(entries(cfg_rewards)):
        key = f"method.rewards[{i}]"
        spec = entry.get("fn")
        if not isinstance(spec, str) or not spec:
            raise ConfigError(f"{key}.fn is missing: name a shipped reward ({', '.join(shipped())}) or module:function")
        fn = load(spec, key)
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"{key}.weight must be a number, like weight: 0.5 (got {weight!r})")
        bound = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        takes = accepted(fn, spec, key, bound)
        name = str(entry.get("name") or getattr(fn, "__name__", spec.rsplit(":", 1)[-1]))
        if name in names:
            raise ConfigError(f"{key}: two rewards are named {name!r}; give one a name: {key}.name=...")
        names.add(name)
        rewards.append(Reward(name, fn, float(weight), key, bound, takes))
    return rewards


def shipped() -> List[str]:
    module = importlib.import_module(BUILTIN)
    return sorted(module.SHIPPED)


def load(spec: str, key: str) -> Callable:
    """The function `spec` names: a shipped reward, module:function or module.function."""
    if ":" not in spec and "." not in spec:
        module = importlib.import_module(BUILTIN)
        if spec not in module.SHIPPED:
            raise ConfigError(
                f"{key}.fn={spec}: no shipped reward of that name (shipped: {', '.join(shipped())}); "
                "name your own as module:function"
            )
        return module.SHIPPED[spec]
    module_name, _, attr = spec.rpartition(":") if ":" in spec else spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a missing module, or one that fails as it imports
        raise ConfigError(
            f"{key}.fn={spec}: cannot import {module_name} ({type(e).__name__}: {e}); is it installed or on PYTHONPATH?"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise ConfigError(f"{key}.fn={spec}: {module_name} has no {attr!r} (it has {', '.join(found) or 'nothing'})")
    if not callable(fn):
        raise ConfigError(f"{key}.fn={spec}: {attr} is a {type(fn).__name__}, not a function")
    return fn


def accepted(fn: Callable, spec: str, key: str, bound: dict) -> Optional[frozenset]:
    """The argument names `fn` takes (None: any, through **kwargs); ConfigError when it cannot be called the TRL
    way, by keyword, with the entry's own arguments."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: it is called and its errors reported
        return None
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    positional_only = [n for n, p in params.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional_only:
        raise ConfigError(
            f"{key}.fn={spec}: {positional_only[0]} is positional-only; rewards are called by keyword "
            "(prompts=..., completions=..., column=...), as TRL calls them"
        )
    if not open_ended and "completions" not in named:
        raise ConfigError(
            f"{key}.fn={spec} does not accept completions=; a reward is called as fn(prompts, completions, "
            "**columns) (add **kwargs for what it does not use)"
        )
    for arg in bound:
        if not open_ended and arg not in named:
            takes = ", ".join(sorted(named - set(GIVEN))) or "nothing more"
            raise ConfigError(f"{key}.{arg}: {spec} takes no argument {arg!r} (it takes {takes})")
    return None if open_ended else frozenset(named)


def required_columns(reward: Reward) -> List[str]:
    """The arguments `reward` needs that only the data's columns can give: named, without a default, not bound."""
    try:
        params = inspect.signature(reward.fn).parameters
    except (TypeError, ValueError):
        return []
    return [
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
        and n not in GIVEN
        and n not in reward.bound
    ]


def check_columns(rewards: List[Reward], columns: set, where: str) -> None:
    """Each column a reward needs is in the data (`columns`: those of the training rows, reference included when
    a row has one); ConfigError naming the reward's key and the columns there are."""
    for reward in rewards:
        for name in required_columns(reward):
            if name not in columns:
                have = ", ".join(sorted(columns)) or "none besides the prompt"
                raise ConfigError(
                    f"{reward.key}.fn: {reward.name} needs a column {name!r}, and the rows of {where} have none "
                    f"(columns: {have}); rename the column, or give {reward.key}.{name}=... a value"
                )


def score(rewards: List[Reward], prompts: list, completions: list, ids: list, columns: Dict[str, list], rows: list):
    """{name: [float or None per completion]} of every reward; a reward that raises or returns something else stops
    the run with a StepError naming it and the row (rows: each completion's row's `where`)."""
    out = {}
    for reward in rewards:
        try:
            values = reward(prompts, completions, ids, columns)
        except Exception as e:
            raise StepError(_failure(reward, e, prompts, completions, ids, columns, rows)) from e
        values = list(values) if isinstance(values, (list, tuple)) else values
        if not isinstance(values, list) or len(values) != len(completions):
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise StepError(
                f"reward {reward.name} ({reward.key}) returned {got} for {len(completions)} completions; it must "
                "return a list with one float (or None) per completion"
            )
        checked = []
        for j, v in enumerate(values):
            number = _number(v)
            if number is False:
                raise StepError(
                    f"reward {reward.name} ({reward.key}) returned {v!r} for completion {j} of {rows[j]}; "
                    "each value must be a float or None"
                )
            checked.append(number)
        out[reward.name] = checked
    return out


def _number(v):
    """A reward value as a float, None for None or NaN (does not apply), False for anything else."""
    if v is None:
        return None
    if isinstance(v, (bool, str, bytes)):
        return False
    try:
        number = float(v)  # ints, floats, numpy and torch scalars
    except (TypeError, ValueError):
        return False
    return None if math.isnan(number) else number


def _failure(reward: Reward, error: Exception, prompts, completions, ids, columns, rows) -> str:
    """The message for a reward that raised: its name, the first row it fails on alone, the error."""
    row = None
    for j in range(len(completions)):
        one = {k: v[j : j + 1] for k, v in columns.items()}
        try:
            reward(prompts[j : j + 1], completions[j : j + 1], ids[j : j + 1], one)
        except Exception:
            row = rows[j]
            break
    at = f"on {row}" if row else "on the batch (no single completion fails alone)"
    return f"reward {reward.name} ({reward.key}) raised {type(error).__name__}: {error} {at}"


def weighted(rewards: List[Reward], scores: Dict[str, list]) -> List[float]:
    """Each completion's reward: the weighted sum over the functions that apply to it (None counts as 0, as a
    function that does not apply adds nothing)."""
    n = len(next(iter(scores.values()))) if scores else 0
    return [sum(r.weight * scores[r.name][j] for r in rewards if scores[r.name][j] is not None) for j in range(n)]
