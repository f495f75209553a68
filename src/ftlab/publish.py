"""`python -m ftlab.publish RUN_DIR [--repo-id ID] [--public]`: push a finished run to the Hugging Face Hub.

For runs trained without hub.push, and for pushes that failed after training: the run's saved config supplies
hub.repo_id, hub.private and the retry policy unless the command line says otherwise. The token comes from
HF_TOKEN or the stored login (`hf auth login`), never from a file ftlab wrote.
"""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from ftlab import card, hub
from ftlab.errors import FtlabError


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ftlab.publish", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run's dir (it has adapter/ and .hydra/config.yaml)")
    parser.add_argument("--repo-id", help="model repo to push to (default: the run's hub.repo_id)")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: hub.private)")
    return parser.parse_args(argv)


def load_config(run_dir: Path) -> DictConfig:
    from ftlab.configure import setup

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise hub.PublishError(f"{run_dir} is not an ftlab run dir: {path} is missing")
    setup()  # the saved config may hold ${ftlab.*} interpolations (sweeps), which need ftlab's resolvers
    return OmegaConf.load(path)


def publish(run_dir: Path, repo_id: Optional[str], public: bool) -> str:
    cfg = load_config(run_dir)
    repo_id = repo_id or OmegaConf.select(cfg, "hub.repo_id")
    if not repo_id:
        raise hub.PublishError(f"no repo to push {run_dir} to: pass --repo-id your-name/your-model-lora")
    if not (run_dir / "README.md").is_file():
        metrics = run_dir / "metrics.json"
        stats = json.loads(metrics.read_text()) if metrics.is_file() else {}
        card.write(run_dir, cfg, stats, f"python -m ftlab --rerun {run_dir}", repo=repo_id)
    return hub.push(run_dir, repo_id, private=not public and OmegaConf.select(cfg, "hub.private", default=True),
                    token=os.environ.get("HF_TOKEN") or None,
                    retries=OmegaConf.select(cfg, "hub.retries", default=4),
                    retry_wait=OmegaConf.select(cfg, "hub.retry_wait", default=2.0))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse(argv)
    try:
        print(publish(args.run_dir, args.repo_id, args.public))
    except FtlabError as e:
        print(f"ftlab: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
