"""A model's architecture without its weights: the config ftlab.plan builds the model from, on fake tensors.

Nothing here downloads: a Hub model's config.json comes from the local Hub cache, else from the copy ftlab ships
for its model presets (conf/model/; assets/model_configs/, the published files' architecture, checked against
each model's published parameter count by the tests), else the error says how to fetch the few KB alone.
"""

from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from ftlab.model.source import byte_tokenizer, converted_gguf, random_config
from ftlab.utils.errors import FtlabError, first_line

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "model_configs"


def architecture(model_cfg, cache_dir: str) -> tuple:
    """(the model's transformers config, where it came from)."""
    if model_cfg.random_init is not None:
        path = model_cfg.path
        tokenizer = AutoTokenizer.from_pretrained(path) if path else byte_tokenizer()
        return random_config(model_cfg.random_init, tokenizer), "model.random_init"
    if model_cfg.gguf_file is not None:
        return _from_gguf(model_cfg, Path(cache_dir).expanduser())
    source = model_cfg.path or model_cfg.name
    local = Path(source).expanduser()
    if model_cfg.path is not None or local.is_dir():
        return _load(local, model_cfg, f"model.path={source}"), str(local / "config.json")
    try:
        config = AutoConfig.from_pretrained(
            source, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code, local_files_only=True
        )
        return config, "the Hub cache"
    except (OSError, ValueError):
        pass
    shipped = SHIPPED / f"{source.replace('/', '--')}.json"
    if shipped.is_file():
        return AutoConfig.from_pretrained(shipped), "ftlab's copy of its config.json"
    raise FtlabError(
        f"model.name={source}: its config.json is not in the local Hub cache and ftlab ships none for it; fetch "
        f"that file alone (a few KB, no weights): hf download {source} config.json, or set model.path to a "
        "folder holding it"
    )


def _from_gguf(model_cfg, cache: Path) -> tuple:
    """A GGUF model's config: from its converted copy in ftlab's cache, else read from the file's header."""
    converted = converted_gguf(model_cfg, cache, "config.json")
    if converted is not None:
        return AutoConfig.from_pretrained(converted), str(converted / "config.json")
    directory = Path(model_cfg.path or model_cfg.name).expanduser()
    gguf = directory / model_cfg.gguf_file
    if not gguf.is_file():
        raise FtlabError(f"model.gguf_file: {gguf} not found; check model.path and model.gguf_file")
    config = AutoConfig.from_pretrained(str(directory), gguf_file=model_cfg.gguf_file)
    if hasattr(config, "quantization_config"):  # ftlab trains on the dequantised weights, not the GGUF's blocks
        del config.quantization_config
    return config, str(gguf)


def _load(directory: Path, model_cfg, key: str):
    try:
        return AutoConfig.from_pretrained(directory, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise FtlabError(f"{key}: no readable config.json there ({first_line(e, 120)})") from None
