"""Several datasets in one run (data.sources). Each source is read, split, checked, tokenized and cached on its own,
with its own options (source_config: the recipe's stages run once per source, FineTune.for_source); the training
examples are then drawn from the tokenized sources by data.mix:

  concat    every training example of every source
  weighted  data.mix_size examples (0: as many as the sources have), round(size x weight / sum of weights) from each
            source: fewer than it has are drawn without replacement, more repeat whole passes then a drawn rest,
            each source seeded by `seed` and its label (a new weight for one source leaves another's draw alone)

Validation examples stay per source (the module logs val/loss_<label> beside val/loss); the test split is every
source's, in data.sources order. Nothing drawn is cached: changing a weight or the size re-tokenizes nothing.
"""

import copy
import dataclasses
import hashlib
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import List

from omegaconf import DictConfig, OmegaConf

from ftlab.data.rows import labels
from ftlab.data.splits import Prepared, Split
from ftlab.utils.console import info
from ftlab.utils.errors import ConfigError, FtlabError


@dataclass
class Part:
    """One source of a mix: its label, its tokenized splits, its weight, and how many training examples it gave."""

    label: str
    prepared: Prepared
    weight: float
    taken: int = 0


@dataclass
class Mixed(Prepared):
    """The tokenized data of a mix: train is the drawn examples, validation and test every source's, in order."""

    parts: List[Part] = field(default_factory=list)
    origins: List[str] = field(default_factory=list)
    """The label of the source of each training example."""

    @property
    def validation_sizes(self) -> List[int]:
        """How many of the validation examples, in order, each source has."""
        return [len(p.prepared.splits["validation"].items) for p in self.parts]


def source_config(cfg: DictConfig, index: int) -> DictConfig:
    """The run's config as data.sources[index] is read: data.* set to that source's options (those it leaves null,
    and its null columns, are the run's), data.sources empty. So everything that shapes its tokens keys its cache
    entry, and its weight and label (shapes_tokens=False) stay out of it."""
    source = cfg.data.sources[index]
    values = OmegaConf.to_container(source, resolve=True)
    own = {k: values[k] for k in _own_keys(source) if values[k] is not None and k != "columns"}
    own["columns"] = {k: v for k, v in values["columns"].items() if v is not None}
    out = copy.deepcopy(cfg)
    OmegaConf.set_readonly(out, False)
    out.data.merge_with({**own, "sources": []})
    OmegaConf.set_readonly(out, True)
    return out


def _own_keys(source) -> List[str]:
    """The data.* keys a source of data.sources sets for itself: its options that shape tokens (not its weight)."""
    return [f.name for f in dataclasses.fields(OmegaConf.get_type(source)) if f.metadata.get("shapes_tokens", True)]


@contextmanager
def naming(sources, index: int):
    """Errors met with data.sources[index] name its own keys (data.sources.N.path where they say data.path) and,
    first, the source."""
    try:
        yield
    except FtlabError as e:
        key, label = f"data.sources.{index}", labels(sources)[index]
        own = re.compile(rf"\bdata\.({'|'.join(_own_keys(sources[index]))})\b")
        message = own.sub(lambda m: f"{key}.{m.group(1)}", str(e))
        e.args = (message if message.startswith(key) else f"{key} ({label}): {message}",)
        raise


def combine(parts: List[Part], mix: str, mix_size: int, seed: int) -> Mixed:
    """The sources' tokenized splits as one: the training examples drawn by `mix`, the others concatenated."""
    first = parts[0]
    for part in parts[1:]:
        if part.prepared.kind != first.prepared.kind:
            raise ConfigError(
                f"data.sources mixes kinds of example: {first.label} ({first.prepared.format}) makes "
                f"{first.prepared.kind} examples, {part.label} ({part.prepared.format}) {part.prepared.kind}; "
                "train them in separate runs, or map the columns to one format with data.sources.N.columns.*"
            )
    available = [len(p.prepared.splits["train"].items) for p in parts]
    wanted = available if mix == "concat" else counts(available, [p.weight for p in parts], mix_size)
    train, origins, taken = Split(), [], []
    for part, n in zip(parts, wanted):
        items = part.prepared.splits["train"].items
        drawn = draw(len(items), n, random.Random(f"{seed}:{part.label}"))
        train.items.extend(items[i] for i in drawn)
        origins.extend([part.label] * len(drawn))
        taken.append(dataclasses.replace(part, taken=len(drawn)))
    splits = {"train": train}
    for name in ("validation", "test"):
        if any(name in p.prepared.splits for p in parts):
            held = [p.prepared.splits.get(name, Split()) for p in parts]
            splits[name] = Split([x for s in held for x in s.items], sum(s.dropped for s in held))
    train.dropped = sum(p.prepared.splits["train"].dropped for p in parts)
    named = list(dict.fromkeys(p.prepared.format for p in parts if p.prepared.format))
    return Mixed(
        format="+".join(named) or None,
        kind=first.prepared.kind,
        splits=splits,
        skipped=[reason for p in parts for reason in p.prepared.skipped],
        fingerprint=fingerprint([(p.label, p.prepared.fingerprint) for p in parts]),
        rows_read=sum(p.prepared.rows_read for p in parts),
        parts=taken,
        origins=origins,
    )


def counts(available: List[int], weights: List[float], size: int) -> List[int]:
    """Training examples each source gives a weighted mix of `size` (0: the sum of `available`)."""
    size = size or sum(available)
    total = sum(weights)
    return [round(size * w / total) for w in weights]


def draw(available: int, n: int, rng: random.Random) -> List[int]:
    """`n` indices into `available` examples: a sample without replacement when n <= available, else whole passes
    over all of them and a sample for the rest; in index order within each pass (the data loader shuffles)."""
    passes, rest = divmod(n, available) if available else (0, 0)
    return list(range(available)) * passes + sorted(rng.sample(range(available), rest))


def fingerprint(parts: List[tuple]) -> str:
    """One fingerprint of the sources' (label, content fingerprint): training records it, evaluation compares it."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def report(mixed: Mixed, mix: str, mix_size: int, seed: int) -> dict:
    """Print a line per source (label, rows read, training examples it has, taken, weight share) and return the
    same as data_mix.json holds."""
    taken = sum(p.taken for p in mixed.parts)
    total_weight = sum(p.weight for p in mixed.parts)
    how = f"{taken} training examples drawn by weight (data.mix_size={mix_size})" if mix == "weighted" else None
    info(f"data mix: {len(mixed.parts)} sources, " + (how or f"every training example ({taken}; data.mix=concat)"))
    sources = []
    for p in mixed.parts:
        available = len(p.prepared.splits["train"].items)
        share = p.weight / total_weight if mix == "weighted" else (p.taken / taken if taken else 0.0)
        times = f" (x{p.taken / available:.2g})" if available and p.taken > available else ""
        info(
            f"  {p.label}: {p.prepared.rows_read} rows read, {available} training examples, {p.taken} taken{times}, "
            + (f"weight {p.weight:g} ({share:.0%})" if mix == "weighted" else f"{share:.0%} of the mix")
            + f"; {len(p.prepared.splits['validation'].items)} validation"
        )
        sources.append(
            dict(
                label=p.label,
                format=p.prepared.format,
                rows_read=p.prepared.rows_read,
                train_available=available,
                taken=p.taken,
                weight=p.weight,
                share=round(share, 4),
                validation=len(p.prepared.splits["validation"].items),
                test=len(p.prepared.splits.get("test", Split()).items),
                fingerprint=p.prepared.fingerprint,
            )
        )
    return dict(mix=mix, mix_size=mix_size, seed=seed, train_examples=taken, sources=sources)
