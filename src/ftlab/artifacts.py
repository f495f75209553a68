"""What a run leaves on disk and how later runs find it: run-dir guards, metrics.json, resume look-up.

A run dir holds, once training finished:
  .hydra/                      config.yaml (re-runnable), overrides.yaml, hydra.yaml (CLI runs)
  adapter/                     PEFT adapter + tokenizer (with the chat template used in training)
  checkpoints/last.ckpt        adapter + optimizer state, for resume=
  logs/metrics.csv             every logged metric by step
  loss.png                     training and validation loss curves
  metrics.json                 the run's numbers, versions and provenance
  train.log                    the console output, timestamped
  eval/                        evaluation report (eval.after_train=true or ftlab.evaluate; later ones eval-2/ ...)
  merged/                      the merged model, after ftlab.export
"""
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Optional

from ftlab.errors import FtlabError

CHECKPOINT = Path("checkpoints") / "last.ckpt"
# files a run writes; a dir holding any of them belongs to a run and is never written over
RUN_MARKERS = ("metrics.json", "adapter", "checkpoints")


def saved_config_dir(run_dir: str) -> str:
    path = Path(run_dir).expanduser().resolve() / ".hydra"
    if not (path / "config.yaml").is_file():
        raise FtlabError(f"{run_dir} is not an ftlab run dir: {path / 'config.yaml'} is missing")
    return str(path)


def find_resume_dir(value: str, outputs: Path) -> Path:
    """`last`: the newest run under `outputs` with a checkpoint; otherwise the run dir given."""
    if value == "last":
        found = sorted(outputs.glob(f"**/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FtlabError(f"resume=last: no run with {CHECKPOINT} under {outputs.resolve()}")
        return found[-1].parent.parent.resolve()
    run_dir = Path(value).expanduser().resolve()
    if not (run_dir / CHECKPOINT).is_file():
        raise FtlabError(f"resume={value}: {run_dir / CHECKPOINT} not found; give a run dir that has "
                         "written a checkpoint, or resume=last")
    return run_dir


def resume_position(checkpoint: Path) -> tuple:
    """(epoch, batches done in it) where a Lightning checkpoint stopped, to restart the data there."""
    import torch

    loops = torch.load(checkpoint, map_location="cpu", weights_only=False)["loops"]["fit_loop"]
    return (loops["epoch_progress"]["current"]["completed"],
            loops["epoch_loop.batch_progress"]["current"]["processed"])


def new_run_dir(root: Path = Path("outputs")) -> Path:
    """Create and return root/DATE/TIME, or TIME-1, TIME-2 ... when that second is taken. mkdir is atomic, so
    runs started in the same second, in one process or several, never share a directory."""
    now = datetime.now()
    base = root / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
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


def claim_run_dir(run_dir: Path) -> None:
    """Refuse a dir that already holds another run's results: ftlab never writes over a run."""
    taken = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if taken:
        raise FtlabError(f"{run_dir} already holds a run ({', '.join(taken)}); choose another "
                         "hydra.run.dir or run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)


def discard_unfinished(run_dir: Path) -> None:
    """Remove a run dir that a failed run left without results (only config and log), so errors leave
    nothing behind; a dir with checkpoints or results is kept for resume= and inspection."""
    if run_dir.is_dir() and not any((run_dir / m).exists() for m in RUN_MARKERS):
        shutil.rmtree(run_dir)
        if run_dir.parent.name != "outputs" and run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()  # the empty date folder too


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list) -> None:
    """One JSON object per line, written atomically like write_json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(tmp, path)


def versions() -> dict:
    out = {}
    for pkg in ("ftlab", "torch", "transformers", "peft", "lightning", "bitsandbytes", "hydra-core"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> Optional[str]:
    """The commit of the ftlab source tree when it is a git checkout (editable install), else None."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def plot_losses(run_dir: Path) -> None:
    """loss.png from logs/metrics.csv: training loss per step, validation loss where measured."""
    import csv

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    series = {k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k)] for k in ("train/loss", "val/loss")}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        if points:  # validation is measured rarely: dots, so no straight line suggests a path between them
            ax.plot(*zip(*points), **({"marker": "o", "linestyle": ":"} if name == "val/loss" else {}), label=name)
    values = [v for points in series.values() for _, v in points]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # a fine-tune often spans decades of loss; linear would flatten the end
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=100)
    plt.close(fig)
