"""`python -m ftlab.publish RUN_DIR [--repo-id ID] [--public]`: push a finished run to the Hugging Face Hub.

For runs trained without hub.push, and for pushes that failed after training: the run's saved config supplies
hub.repo_id, hub.private and the retry policy unless the command line says otherwise. The token comes from
HF_TOKEN or the stored login (`hf auth login`), never from a file ftlab wrote.
"""

import argparse
import json
import os
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from ftlab.config.overrides import apply_overrides
from ftlab.hub import card, push
from ftlab.utils.console import info
from ftlab.utils.errors import exit_on_error

PROG = "ftlab.publish"


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's dir (it has adapter/ and .hydra/config.yaml)")
    parser.add_argument("--repo-id", help="model repo to push to (default: the run's hub.repo_id)")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: hub.private)")
    return parser.parse_args(argv)


def publish(run_dir: Path, repo_id: Optional[str], public: bool) -> str:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise push.PublishError(f"{run_dir} is not an ftlab run dir: {path} is missing")
    cfg = apply_overrides(OmegaConf.load(path), [])  # through the schema: an older config gets today's defaults
    repo_id = repo_id or cfg.hub.repo_id
    if not repo_id:
        raise push.PublishError(f"no repo to push {run_dir} to: pass --repo-id your-name/your-model-lora")
    if not (run_dir / "README.md").is_file():
        metrics = run_dir / "metrics.json"
        stats = json.loads(metrics.read_text()) if metrics.is_file() else {}
        card.write(run_dir, cfg, stats, f"python -m ftlab --rerun {run_dir}", repo=repo_id)
    h = cfg.hub
    return push.push(
        run_dir,
        repo_id,
        private=h.private and not public,
        token=os.environ.get("HF_TOKEN") or None,
        retries=h.retries,
        retry_wait=h.retry_wait,
        log=info,
    )


def main(argv: Optional[List[str]] = None) -> None:
    args = parse(argv)
    with exit_on_error(PROG):
        print(publish(args.run_dir, args.repo_id, args.public))


if __name__ == "__main__":
    main()
