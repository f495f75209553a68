"""Sources read through the `datasets` library: a Hub dataset (data.name) and a folder written by
`save_to_disk` (data.path), their splits named as the Hub names them."""

import hashlib
import json
from pathlib import Path
from typing import Callable, Dict, List

from ftlab.data.rows import _SPLIT_WORDS, SPLITS, Problems, Source, _fingerprint
from ftlab.utils.errors import FtlabError, first_line

# the files `save_to_disk` writes beside its .arrow data: a Dataset's two, a DatasetDict's one
_SAVED_DATASET = ("dataset_info.json", "state.json")
_SAVED_DICT = "dataset_dict.json"


def _is_saved(folder: Path) -> bool:
    """Whether `folder` was written by `save_to_disk`: the files `datasets.load_from_disk` itself looks for."""
    return all((folder / name).is_file() for name in _SAVED_DATASET) or (folder / _SAVED_DICT).is_file()


def _saved_source(root: Path, extra: Dict[str, List[Path]], read_files: Callable) -> Source:
    """A Dataset (the train split) or DatasetDict (its splits named as a Hub dataset's) from `save_to_disk`,
    with data.val_path/test_path replacing its own split of that name."""
    import datasets  # here, not above: it takes a second to import, and only these sources need it

    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_from_disk(str(root))
    except Exception as e:  # a damaged or partly copied folder; pyarrow and datasets raise several types
        raise FtlabError(
            f"data.path={root}: cannot load this save_to_disk folder ({first_line(e, 160)}); save it again with "
            "save_to_disk, or export it to .jsonl/.parquet files"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        chosen = {"train": ("train", loaded)}
    else:
        chosen = _choose_splits(loaded)
        if "train" not in chosen:
            raise FtlabError(
                f"data.path={root}: this saved DatasetDict has no train split (it has: {', '.join(loaded)}); "
                "save one named train, or set data.path to one split's folder"
            )
    # the bytes, not datasets' own fingerprint: save_to_disk keeps whatever one the dataset carried (a caller's
    # new_fingerprint=, a random one after an unhashable .map()), so equal fingerprints need not mean equal rows
    saved = sorted(p for p in root.rglob("*") if p.is_file())
    hashed = [(f"saved:{p.relative_to(root)}", p) for p in saved]
    hashed += [(f"{split}:{path.name}", path) for split in SPLITS for path in extra.get(split, [])]
    label = str(root)

    def read(problems: Problems) -> dict:
        named = {split: _dataset_rows(label, n, d) for split, (n, d) in chosen.items()}
        return {**named, **read_files(extra, problems)}

    return Source(label, _fingerprint(hashed), read)


def _choose_splits(loaded) -> dict:
    """{split: (its name in the dataset, the split)} by _SPLIT_WORDS; the first of synonyms wins, others
    (unsupervised, extra ...) are left out."""
    chosen = {}
    for name in loaded:
        split = _SPLIT_WORDS.get(name.lower())
        if split is not None and split not in chosen:
            chosen[split] = (name, loaded[name])
    return chosen


def _dataset_rows(label: str, name: str, dataset) -> List[tuple]:
    """(where, row) of one datasets split as plain Python values ("label[name] row 3"), whatever format the
    dataset was saved with (a torch or numpy format would hand over tensors)."""
    return [(f"{label}[{name}] row {i}", row) for i, row in enumerate(dataset.with_format(None), start=1)]


def _hub_source(name: str, subset) -> Source:
    """A dataset by Hub id (or a local dataset folder), through the datasets library and its cache."""
    import datasets  # here, not above: it takes a second to import, and only data.name needs it

    datasets.disable_progress_bars()
    try:
        loaded = datasets.load_dataset(name, subset)
    except Exception as e:  # network, auth, missing subset, offline mode: one line either way
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FtlabError(
            f"data.name={name}: cannot load the dataset ({reason}). Offline, only datasets already "
            "in the datasets cache load: connect and retry once, or download it and use "
            "data.path=/local/files"
        ) from None
    splits = _choose_splits(loaded)
    if "train" not in splits:
        raise FtlabError(f"data.name={name} has no train split (it has: {', '.join(loaded)})")
    fingerprint = hashlib.sha256(
        json.dumps([name, subset, [(s, n, d._fingerprint) for s, (n, d) in sorted(splits.items())]]).encode()
    ).hexdigest()[:16]

    def read(problems: Problems) -> dict:
        label = name + (f"/{subset}" if subset else "")
        return {split: _dataset_rows(label, n, d) for split, (n, d) in splits.items()}

    return Source(name, fingerprint, read)
