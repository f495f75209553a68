"""Files that no reader and no crash ever sees half-written, names that never collide with an earlier
result, and the one place that knows where outputs go.

    with atomic(path) as tmp:          # write tmp (a file; a folder with directory=True) ...
        ...                            # ... renamed to path in one step on success, removed on failure
    write_text / write_json / write_jsonl (path, ...)       the same, for the common cases
"""

import itertools
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterable, Optional

from ftlab.utils.errors import FtlabError

OUTPUTS_VARIABLE = "FTLAB_OUTPUTS"


def outputs_root() -> Path:
    """Where runs, sweeps, evaluations and the local MLflow store go: $FTLAB_OUTPUTS, else outputs/ in the
    working directory."""
    return Path(os.environ.get(OUTPUTS_VARIABLE) or "outputs")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic(path: Path, directory: bool = False):
    """Yield a temporary sibling of `path` to write (a file, or with `directory` a folder to fill). On success
    it is renamed to `path` in one step, so readers see the old state or the whole new one; on failure it is
    removed. A folder is renamed only onto nothing: an existing `path` raises OSError (a concurrent writer won)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=path.suffix)  # keeps the suffix
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp make private files; results get the permissions any other file would
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        if directory:
            os.rename(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: Path, text: str) -> Path:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, data: dict) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    return write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def new_run_dir(root: Optional[Path] = None) -> Path:
    """Create and return ROOT/DATE/TIME (ROOT: outputs_root()), or TIME-1, TIME-2 ... when that second is
    taken. mkdir is atomic, so runs started in the same second, in one process or several, never share a dir."""
    now = datetime.now()
    base = (root or outputs_root()) / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count():
        candidate = base if n == 0 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def unused_path(path: Path) -> Path:
    """`path`, or `path-2`, `path-3` ... (before any suffix) once taken: a new result never replaces an older one."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def new_output(path: Path, what: str) -> Path:
    """An output path the user named, refused if it exists: ftlab never writes over results."""
    if path.exists():
        raise FtlabError(f"{path} already exists; ftlab never writes over {what}: give a new output=PATH")
    return path


def sqlite_file(url: str) -> Optional[Path]:
    """The database file of a `sqlite:///PATH` URL (relative or, with a fourth slash, absolute), else None."""
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]).expanduser() if url.startswith(prefix) else None
