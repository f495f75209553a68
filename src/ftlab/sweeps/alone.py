"""A sweep trial with several ranks, run as a `python -m ftlab` of its own: Lightning starts each further rank by
re-running the command, and a sweep's command is the whole sweep. The trial's run dir already holds the config
Hydra saved; its place in the study reaches it through the environment (env.py)."""

import json
import subprocess
import sys
from pathlib import Path

from ftlab.config.compose import CONFIG_NAME
from ftlab.utils.errors import FtlabError


def run_trial_alone(run_dir: Path) -> dict:
    """The trial's metrics, once its own process has trained it in `run_dir`."""
    argv = ["--config-path", str(run_dir / ".hydra"), "--config-name", CONFIG_NAME, "hydra/job_logging=none"]
    argv += ["hydra.job.name=ftlab", f"hydra.run.dir={run_dir}", "hydra.output_subdir=null"]
    done = subprocess.run([sys.executable, "-m", "ftlab", *argv], check=False)
    metrics = run_dir / "metrics.json"
    if done.returncode != 0 or not metrics.is_file():
        raise FtlabError(f"the trial's training process exited with status {done.returncode} (its output is above)")
    return json.loads(metrics.read_text(encoding="utf-8"))
