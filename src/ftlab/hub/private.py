"""What a push publishes names no local path: a local data file by its name and content hash, a local base model by
its Hub id, and no folder of this machine (a home folder, a user or project name) in any uploaded file.

The run's files stay as they are; the pushed copies are rewritten: ftlab_config.yaml with each local path cut to
its file name (model.path, a local copy of the base, dropped: model.name names it on the Hub), adapter_config.json
with the base model's Hub id, and every uploaded text file with the local paths the run used replaced by their
file names.
"""

import hashlib
import json
from pathlib import Path
from typing import Iterable, List, Optional

import yaml

HASHED = 12  # hex digits of a file's SHA-256 shown beside its name


def is_local(value) -> bool:
    """A string naming an absolute path of this machine (not a Hub id, a relative path or an interpolation)."""
    return isinstance(value, str) and value.startswith("/") and "${" not in value


def described(path: str) -> str:
    """A local file as a card names it: its file name and, when it is there to read, its content's hash."""
    file = Path(path).expanduser()
    if file.is_file():
        digest = hashlib.sha256()
        with open(file, "rb") as f:  # a data file may be gigabytes: read in chunks
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return f"{file.name} (sha256 {digest.hexdigest()[:HASHED]})"
    return file.name


def local_paths(config: dict, extra: Iterable[str] = ()) -> List[str]:
    """Every absolute path in a run's saved config (and `extra` ones), as written and resolved, longest first so
    that a path inside another is replaced after the one that holds it."""
    found = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif is_local(node):
            found.update({node, str(Path(node).resolve())})

    walk(config)
    for path in extra:
        found.update({path, str(Path(path).resolve())})
    return sorted({p.rstrip("/") for p in found if p.rstrip("/")}, key=len, reverse=True)


def scrub_text(text: str, paths: Iterable[str]) -> str:
    """`text` with each local path replaced by its last part (a file or folder name), and any other path under the
    home folder written from ~ (the home folder's name is often the user's)."""
    for path in paths:
        text = text.replace(path, Path(path).name)
    home = str(Path.home()).rstrip("/")
    return text.replace(home + "/", "~/") if home else text


def pushed_config(text: str, paths: List[str]) -> str:
    """The run's config as pushed: model.path (a local copy of the base) dropped, other local paths cut."""
    config = yaml.safe_load(text) or {}
    model = config.get("model")
    if isinstance(model, dict) and is_local(model.get("path")):
        model["path"] = None  # the puller loads model.name from the Hub
        text = yaml.safe_dump(config, sort_keys=False)
    return scrub_text(text, paths)


def pushed_adapter_config(text: str, base_id: Optional[str]) -> str:
    """adapter_config.json as pushed: the base model named by its Hub id where PEFT recorded a local folder."""
    config = json.loads(text)
    if not (base_id and is_local(config.get("base_model_name_or_path"))):
        return text
    config["base_model_name_or_path"] = base_id
    return json.dumps(config, indent=2, sort_keys=True) + "\n"
