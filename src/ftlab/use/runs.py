"""What `run=` names, for the commands that use a finished run (infer, evaluate, export): its config and files.

`run=` may be:
  a run dir          .hydra/config.yaml + adapter/: the saved config rebuilds the base model exactly as trained
  an adapter dir     adapter_config.json (+ the tokenizer): a run's adapter/, or a download of a pushed one
  a Hub id           owner/name of a pushed adapter (downloaded once into the Hub cache), or of a plain model
  a plain model      a model dir or Hub id without an adapter: the base alone, for comparison
The config of an adapter comes from ftlab_config.yaml beside it (pushed runs carry it), the run dir above it,
or else from adapter_config.json (its base model, no quantization). Loading the model is the recipe's job
(FineTune.load_trained), so a run is loaded by the same stages that trained it.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
from omegaconf import DictConfig, OmegaConf

from ftlab.config.compose import compose
from ftlab.config.overrides import apply_overrides
from ftlab.model import HUB_ID
from ftlab.utils.errors import FtlabError, first_line

PUSHED_CONFIG = "ftlab_config.yaml"  # the run's config, uploaded beside the adapter (hub/push.py)


@dataclass
class Run:
    label: str
    """How outputs name it: the run= value as given."""
    cfg: DictConfig
    """The run's config with the command line's overrides, validated."""
    adapter: Optional[Path]
    """The adapter dir; None for a plain model."""
    run_dir: Optional[Path]
    """The local run dir, where reports go; None for adapters and models from elsewhere."""


def locate(run: str, overrides: List[str]) -> Run:
    path = Path(run).expanduser()
    if path.exists():
        return _local(run, path, overrides)
    if HUB_ID.fullmatch(run):
        return _local(run, _download(run), overrides, hub_id=run)
    raise FtlabError(
        f"run={run}: no such directory, and not a Hub id (owner/name); give a run dir such as "
        "outputs/2026-11-24/10-00-00, an adapter dir or a Hub id"
    )


def _local(label: str, path: Path, overrides: List[str], hub_id: Optional[str] = None) -> Run:
    saved = path / ".hydra" / "config.yaml"
    if saved.is_file():  # a run dir
        adapter = path / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise FtlabError(
                f"run={label}: {adapter / 'adapter_config.json'} is missing, so this run saved no "
                f"adapter (it stopped before the end); continue it with `python -m ftlab resume={path}` "
                "or pick a finished run"
            )
        return Run(label, apply_overrides(OmegaConf.load(saved), overrides), adapter, path)
    if (path / "adapter_config.json").is_file():
        for candidate in (path / PUSHED_CONFIG, path.parent / ".hydra" / "config.yaml"):
            if candidate.is_file():
                run_dir = path.parent if candidate.parent.name == ".hydra" else None
                return Run(label, apply_overrides(OmegaConf.load(candidate), overrides), path, run_dir)
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return Run(label, _plain_config(base, overrides), path, None)
    if (path / "config.json").is_file() or hub_id:
        return Run(label, _plain_config(hub_id or str(path), overrides), None, None)
    raise FtlabError(
        f"run={label}: {path} is neither a run dir (.hydra/config.yaml), an adapter dir "
        "(adapter_config.json) nor a model dir (config.json)"
    )


def _plain_config(base: Optional[str], overrides: List[str]) -> DictConfig:
    """The default config around a base model named by id or path: no quantization, its own chat template."""
    if not base:
        raise FtlabError("adapter_config.json names no base_model_name_or_path; pass model.name=BASE_MODEL")
    local = Path(base).expanduser().is_dir()
    cfg = compose(
        ["quant=none", f"model.name={base}", f"model.path={base if local else 'null'}", "model.gguf_file=null"]
    )
    return apply_overrides(cfg, overrides)


def _download(repo_id: str) -> Path:
    """A pushed adapter's files (small) from the Hub, or the id alone when the repo holds a plain model."""
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub froze it at import
    try:
        hf_hub_download(repo_id, "adapter_config.json", endpoint=endpoint)
        return Path(snapshot_download(repo_id, endpoint=endpoint))
    except RepositoryNotFoundError:
        raise FtlabError(
            f"run={repo_id}: no such repo on the Hub ({endpoint or 'huggingface.co'}), or it is private: "
            "check the id, and set HF_TOKEN for a private repo"
        ) from None
    except LocalEntryNotFoundError as e:  # the Hub gave no usable answer and the file is not cached
        cause = f" ({first_line(e.__cause__, 120)})" if e.__cause__ else ""
        raise FtlabError(
            f"run={repo_id}: could not download its adapter_config.json{cause}, and it is not in the "
            "local Hub cache; check the id and the network (HF_HUB_OFFLINE must be unset), or give a "
            "local run or adapter dir"
        ) from None
    except EntryNotFoundError:
        return Path(repo_id)  # the repo has no adapter: a plain model, loaded by id like any base model
    except Exception as e:  # 401/404 and network errors, each with a one-line cause
        raise FtlabError(
            f"run={repo_id}: cannot download it from the Hub ({first_line(e, 160)}); check the id, "
            "and HF_TOKEN for a private repo"
        ) from None
