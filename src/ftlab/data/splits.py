"""Tokenized splits: what tokenizing a data source produces, how it is checked and described.

  source rows (sources.py) ─▶ parsed by the format (formats/) ─▶ examples of its kind (kinds/) ─▶ Split
  Split ─▶ packed rows or single examples (batching.py) ─▶ ChatDataModule (datamodule.py)

FineTune's data stages drive this, with the preprocessing cache (cache.py) around the tokenizing part.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from ftlab.data import batching
from ftlab.data.kinds import KINDS, Kind
from ftlab.data.sources import Problems
from ftlab.utils.console import info
from ftlab.utils.errors import ConfigError, FtlabError


@dataclass
class Split:
    """Tokenized examples of one split."""

    items: List[dict] = field(default_factory=list)
    dropped: int = 0
    """Rows whose every supervised token truncation to data.max_seq_len removed (nothing left to learn)."""


@dataclass
class Prepared:
    """What tokenizing a data source produced: the cache stores exactly this."""

    format: Optional[str]
    """The data format (formats/), or None for rows a FineTune subclass reads itself."""
    kind: str
    """The kind of every example (kinds/)."""
    splits: Dict[str, Split]
    skipped: List[str] = field(default_factory=list)
    """Reasons for the bad rows skipped under data.skip_bad_rows=true, in order."""
    fingerprint: str = ""
    """The source's content fingerprint (sources.Source): evaluation later checks the data is unchanged."""
    rows_read: int = 0
    """Rows read from the source, every split (a long text document may make several examples)."""

    @property
    def examples(self) -> Kind:
        return KINDS.get(self.kind)


def tokenize_splits(rows: Dict[str, list], tokenize: Callable, problems: Problems) -> dict:
    """{split: Split}. `tokenize(row, where)`: FineTune's stages (to_conversation, then apply_chat_template); a
    row it rejects goes to `problems` (raised, or skipped and counted). It gives an example, None (nothing left to
    learn: dropped) or a list of examples (the blocks of a long text document)."""
    out = {}
    for name, split_rows in rows.items():
        split = out[name] = Split()
        for where, row in split_rows:
            try:
                example = tokenize(row, where)
            except ConfigError:  # not the row's fault (e.g. no format matches the columns): skipping can't help
                raise
            except FtlabError as e:
                problems.report(str(e))
                continue
            if example is None:
                split.dropped += 1
            elif isinstance(example, list):  # a long text document: its blocks
                split.items.extend(example)
            else:
                split.items.append(example)
    return out


def check_not_empty(prepared: Prepared, max_seq_len: int) -> None:
    for name in ("train", "validation"):
        split = prepared.splits[name]
        if split.items:
            continue
        if split.dropped:
            raise FtlabError(
                f"no {name} example survives data.max_seq_len={max_seq_len}: every assistant turn "
                "is truncated away; raise data.max_seq_len"
            )
        raise FtlabError(
            f"no {name} rows are left after skipping {len(prepared.skipped)} bad rows; first: "
            f"{prepared.skipped[0] if prepared.skipped else 'none'}"
        )


def describe(prepared: Prepared, rows: List[dict], data_cfg, seed: int) -> dict:
    """Print what the data became (counts, drops, lengths, padding both ways) once; return it for metrics.json."""
    c, splits, kind = data_cfg, prepared.splits, prepared.examples
    train = splits["train"]
    lengths = [kind.length(x) for x in train.items]
    tokens, supervised = sum(lengths), sum(kind.supervised(x) for x in train.items)
    dropped = sum(s.dropped for s in splits.values())
    info(
        f"examples: {len(train.items)} train, {len(splits['validation'].items)} validation"
        + (f", {len(splits['test'].items)} test" if "test" in splits else "")
        + f"; {dropped} dropped"
        + (f" (every supervised token truncated away by data.max_seq_len={c.max_seq_len})" if dropped else "")
    )
    if prepared.skipped:
        info(
            f"skipped {len(prepared.skipped)} bad rows (data.skip_bad_rows=true); first: "
            + " | ".join(prepared.skipped[:3])
        )
    info(f"tokens per example: {_length_summary(lengths)}; {tokens} train tokens, {supervised} supervised")
    order = batching.epoch_order(len(lengths), seed, 0, lengths if c.group_by_length else None, c.batch_size)
    batch_rows = [kind.rows(x) for x in train.items]
    if not kind.packable:  # several rows per example (a pair's answers) are padded together
        grouped = batching.epoch_order(len(lengths), seed, 0, lengths, c.batch_size)
        padding = [batching.padding_fraction(batch_rows, o, c.batch_size) for o in (order, grouped)]
        together = " chosen and rejected answers padded together" if len(batch_rows[0]) > 1 else ""
        info(
            f"padding: {padding[0]:.0%} of batch tokens{',' if together else ''}{together}"
            + ("" if c.group_by_length else f" (data.group_by_length=true would make it {padding[1]:.0%})")
        )
        return _stats(prepared, train, rows, dropped, padding[0], tokens)
    unpacked = batching.padding_fraction(batch_rows, order, c.batch_size)
    packed_rows = [(len(x["input_ids"]),) for x in (rows if c.packing else batching.pack(train.items, c.max_seq_len))]
    packed = batching.padding_fraction(packed_rows, batching.epoch_order(len(packed_rows), seed, 0), c.batch_size)
    if c.packing:
        info(
            f"packing: {len(train.items)} examples in {len(rows)} rows of <= {c.max_seq_len} tokens; "
            f"padding {packed:.0%} of batch tokens (unpacked: {unpacked:.0%})"
        )
    elif c.group_by_length:
        info(
            f"padding: {unpacked:.0%} of batch tokens, grouped by length (data.packing=true would make it {packed:.0%})"
        )
    else:
        grouped = batching.padding_fraction(
            batch_rows, batching.epoch_order(len(lengths), seed, 0, lengths, c.batch_size), c.batch_size
        )
        info(
            f"padding: {unpacked:.0%} of batch tokens (data.packing=true would make it {packed:.0%}, "
            f"data.group_by_length=true {grouped:.0%})"
        )
    return _stats(prepared, train, rows, dropped, packed if c.packing else unpacked, tokens)


def _stats(prepared: Prepared, train: Split, rows: List[dict], dropped: int, padding: float, tokens: int) -> dict:
    """What describe printed, for metrics.json."""
    splits = prepared.splits
    return dict(
        data_format=prepared.format,
        train_examples=len(train.items),
        val_examples=len(splits["validation"].items),
        test_examples=len(splits["test"].items) if "test" in splits else 0,
        dropped_examples=dropped,
        skipped_rows=len(prepared.skipped),
        tokens_per_example=round(tokens / len(train.items), 1),
        tokens_per_row=round(tokens / len(rows), 1),
        padding_fraction=round(padding, 4),
    )


def _length_summary(lengths: List[int]) -> str:
    ordered = sorted(lengths)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return (
        f"min {ordered[0]}, median {pick(0.5)}, p95 {pick(0.95)}, max {ordered[-1]}, "
        f"mean {sum(ordered) / len(ordered):.0f}"
    )
