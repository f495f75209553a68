"""The run dir's one owner: choosing one (shared by every rank of a job), claiming it, never writing over another
run's, clearing a failed run's, finding one to resume, and the provenance recorded in it.

A run dir holds, once training finished:
  .hydra/                      config.yaml (re-runnable), overrides.yaml, hydra.yaml (CLI runs)
  adapter/                     PEFT adapter + tokenizer (with the chat template used in training)
  checkpoints/last.ckpt        adapter + optimizer state, for resume= (previous.ckpt: the one before it)
  logs/metrics.csv             every logged metric by step
  loss.png                     training and validation loss curves
  metrics.json                 the run's numbers, versions and provenance
  data_mix.json                with data.sources: what each source gave the training examples (data/mix.py)
  train.log                    the console output, timestamped
  eval/                        evaluation report (eval.after_train=true or ftlab.evaluate; later ones eval-2/ ...)
  merged/                      the merged model, after ftlab.export
  gguf/, gguf-adapter/         model.gguf + Modelfile, adapter.gguf: after ftlab.export format=gguf, format=gguf-adapter
"""

import shutil
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Optional

from ftlab.utils import ranks
from ftlab.utils.errors import FtlabError
from ftlab.utils.files import new_run_dir, outputs_root

CHECKPOINT = Path("checkpoints") / "last.ckpt"
# files a run writes; a dir holding any of them belongs to a run and is never written over
RUN_MARKERS = ("metrics.json", "adapter", "checkpoints")


def saved_config_dir(run_dir: str) -> str:
    path = Path(run_dir).expanduser().resolve() / ".hydra"
    if not (path / "config.yaml").is_file():
        raise FtlabError(f"{run_dir} is not an ftlab run dir: {path / 'config.yaml'} is missing")
    return str(path)


def resume_checkpoint(value: str) -> Path:
    """The checkpoint `resume=` names: `last` (the newest run under the outputs root with a checkpoint), a run
    dir (its checkpoints/last.ckpt), or a checkpoint file (e.g. checkpoints/previous.ckpt, one checkpoint back)."""
    if value == "last":
        found = newest_checkpoints()
        if not found:
            raise FtlabError(f"resume=last: no run with {CHECKPOINT} under {outputs_root().resolve()}")
        return found[0].resolve()
    path = Path(value).expanduser().resolve()
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise FtlabError(f"resume={value}: no such checkpoint file")
        return path
    if not (path / CHECKPOINT).is_file():
        raise FtlabError(
            f"resume={value}: {path / CHECKPOINT} not found; give a run dir that has "
            "written a checkpoint, resume=last, or resume=auto"
        )
    return path / CHECKPOINT


def newest_checkpoints() -> list:
    """Every run's checkpoints/last.ckpt under the outputs root, the newest first."""
    return sorted(outputs_root().glob(f"**/{CHECKPOINT}"), key=lambda p: p.stat().st_mtime, reverse=True)


def run_dir_of(checkpoint: Path) -> Path:
    """The run dir a checkpoint belongs to (<run dir>/checkpoints/<file>)."""
    return checkpoint.parent.parent


def find_same_config(config: dict) -> Optional[Path]:
    """resume=auto: the newest run under the outputs root that has a checkpoint and was run with `config` (a plain
    dict of the task config; `resume` itself is left out of the comparison), or None."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    def comparable(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k != "resume"}

    wanted = comparable(config)
    for checkpoint in newest_checkpoints():
        saved = run_dir_of(checkpoint) / ".hydra" / "config.yaml"
        try:
            if comparable(OmegaConf.to_container(OmegaConf.load(saved))) == wanted:
                return run_dir_of(checkpoint).resolve()
        except (OSError, OmegaConfBaseException):
            continue  # a run dir being written, or not ftlab's: not one to continue
    return None


def choose(accelerator: str) -> str:
    """A new run dir, the same on every rank of a job: rank 0 makes it (outputs/DATE/TIME, never one another run
    made in the same second); under torchrun or srun the other ranks learn it from rank 0."""
    run_dir = str(new_run_dir()) if ranks.is_main() else ""
    if ranks.launched_externally():  # torchrun, srun: every rank is here and takes rank 0's dir
        from ftlab.train.distributed import agree_on_run_dir  # torch: only a distributed job loads it here

        run_dir = agree_on_run_dir(run_dir, accelerator)
    return run_dir


@contextmanager
def owned(run_dir: Path, main: bool = True):
    """The run's hold on `run_dir`: claimed (refused if it holds another run's results) on entry, removed if the
    run fails before it has results (checkpoints or an adapter are kept, for resume= and inspection). The other
    ranks of a job share rank 0's dir and leave it to rank 0 (`main`). Entering twice is harmless."""
    if main:
        claim_run_dir(run_dir)
    try:
        yield run_dir
    except Exception:  # Ctrl+C keeps the dir as it is: the hint printed says what it holds
        if main:
            discard_unfinished(run_dir)
        raise


def claim_run_dir(run_dir: Path) -> None:
    """Refuse a dir that already holds another run's results: ftlab never writes over a run."""
    taken = [m for m in RUN_MARKERS if (run_dir / m).exists()]
    if taken:
        raise FtlabError(f"{run_dir} already holds a run ({', '.join(taken)}); choose another hydra.run.dir or run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)


def discard_unfinished(run_dir: Path) -> None:
    """Remove a run dir that a failed run left without results (only config and log), so errors leave
    nothing behind; a dir with checkpoints or results is kept for resume= and inspection."""
    if run_dir.is_dir() and not any((run_dir / m).exists() for m in RUN_MARKERS):
        shutil.rmtree(run_dir)
        parent = run_dir.parent
        if parent.resolve() != outputs_root().resolve() and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # the empty date folder too


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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=src, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
