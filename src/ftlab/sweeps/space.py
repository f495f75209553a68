"""The search space: `params` entries in Hydra's sweep syntax to Optuna distributions, checked up front.

    lora.r: choice(4, 8, 16)                      CategoricalDistribution
    optim.lr: tag(log, interval(1e-5, 1e-3))      FloatDistribution(log=True)
    data.batch_size: range(2, 9, step=2)          IntDistribution(step=2)
    lora.dropout: interval(0.0, 0.2)              FloatDistribution (IntDistribution for whole bounds)

Every key must be an ftlab option, every choice non-empty, every log range positive: a bad space is
rejected before any trial starts, in one line naming the key.
"""

from typing import Dict, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException, OverrideParseException
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ftlab.config.checks import schema_field
from ftlab.config.compose import describe_compose_error
from ftlab.utils.errors import ConfigError, first_line


def split_arguments(arguments: List[str]) -> tuple:
    """Command-line overrides: (fixed ones, {key: text} of sweep ones such as key=choice(...), which join the space)."""
    fixed, swept = [], {}
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except OverrideParseException as e:
        raise ConfigError(describe_compose_error(e)) from None
    for text, override in zip(arguments, overrides):
        if override.is_sweep_override():
            swept[override.get_key_element()] = text.split("=", 1)[1]
        else:
            fixed.append(text)
    return fixed, swept


def searched(preset: Dict[str, str], swept: Dict[str, str], fixed: List[str]) -> tuple:
    """(the search space, [the key=value words that pinned a key]): the preset's params less the keys a plain
    command-line value sets (pinned, as in Hydra's own Optuna sweeper, instead of being overridden by each trial's
    draw), plus the command line's own search ranges, which a plain value never pins."""
    given = {word.split("=", 1)[0].lstrip("+~"): word for word in fixed if "=" in word}
    pinned = [given[key] for key in preset if key in given and key not in swept]
    space = {**{k: v for k, v in preset.items() if k not in given}, **swept}
    if pinned and not space:
        raise ConfigError(
            f"{', '.join(pinned)} pins every key of the search space, so there is nothing to sweep; drop -m, or "
            "leave a key to search"
        )
    return space, pinned


def parse(params: Dict[str, str]) -> dict:
    """{key: optuna distribution}; ConfigError on anything a trial could not use."""
    if not params:
        raise ConfigError(
            "hydra.sweeper.params is empty; give the search space, e.g. hydra.sweeper.params={lora.r:'choice(8,16)'}"
        )
    parser = OverridesParser.create()
    space = {}
    for key, text in params.items():
        if schema_field(key) is None:
            raise ConfigError(f"hydra.sweeper.params.{key}: {key} is not an ftlab option; see python -m ftlab --help")
        try:
            override = parser.parse_override(f"{key}={text}")
        except HydraException as e:
            raise ConfigError(
                f"hydra.sweeper.params.{key}: cannot parse '{text}' ({first_line(e)}); "
                "use choice(a,b), interval(lo,hi), tag(log, interval(lo,hi)) or range(lo,hi,step=s)"
            ) from None
        sweep = override.value()
        where = f"hydra.sweeper.params.{key}={text}"
        if isinstance(sweep, ChoiceSweep):
            if not sweep.list:
                raise ConfigError(f"{where}: an empty choice; list at least one value")
            space[key] = CategoricalDistribution(list(sweep.list))
        elif isinstance(sweep, RangeSweep):
            values = list(range(int(sweep.start), int(sweep.stop), int(sweep.step)))
            if not values:
                raise ConfigError(f"{where}: the range holds no values")
            space[key] = IntDistribution(values[0], values[-1], step=int(sweep.step))
        elif isinstance(sweep, IntervalSweep):
            lo, hi, log = sweep.start, sweep.end, "log" in sweep.tags
            if not lo < hi:
                raise ConfigError(f"{where}: the lower bound must be below the upper one")
            if log and lo <= 0:
                raise ConfigError(f"{where}: a log-scale interval needs a positive lower bound (got {lo})")
            whole = isinstance(lo, int) and isinstance(hi, int)
            space[key] = IntDistribution(lo, hi, log=log) if whole else FloatDistribution(lo, hi, log=log)
        else:
            raise ConfigError(
                f"{where}: not a search range; use choice(...), interval(...) or range(...) "
                "(fixed values go on the command line as key=value)"
            )
    return space
