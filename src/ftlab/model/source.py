"""Where a base model comes from: a Hub id or local dir, a GGUF file (dequantised once into ftlab's cache), or a
random initialisation of a configured shape (built once into the cache).

Every model ends up loaded by `from_pretrained` from the one directory or Hub id `resolve_source` returns, so
quantization and dtype handling (load.py) are the same wherever the weights came from.
"""

import hashlib
import json
from pathlib import Path
from typing import Optional

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from ftlab.model import HUB_ID
from ftlab.utils.console import info
from ftlab.utils.errors import FtlabError, first_line
from ftlab.utils.files import atomic

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def resolve_source(model_cfg, cache_dir: str, seed: int) -> str:
    """Where `from_pretrained` loads from: ftlab's cache for GGUF and random models, else `path` or `name`."""
    cache = Path(cache_dir).expanduser()
    if model_cfg.random_init is not None:
        _check_tokenizer_path(model_cfg.path)
        return str(_build_random(model_cfg, cache, seed))
    if model_cfg.gguf_file is not None:
        return str(_convert_gguf(Path(model_cfg.path or model_cfg.name), model_cfg.gguf_file, cache))
    source = model_cfg.path or model_cfg.name
    if model_cfg.path is not None and not Path(source).expanduser().is_dir():
        raise FtlabError(
            f"model.path={source} is not a directory; point it at a downloaded model (config.json + weights)"
        )
    _check_reachable(source, model_cfg)
    return str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source


def _check_tokenizer_path(path) -> None:
    """With model.random_init, model.path only supplies the tokenizer: a local folder or a Hub id."""
    if path is None or Path(path).expanduser().is_dir() or HUB_ID.fullmatch(path):
        return
    raise FtlabError(
        f"model.path={path} is not a directory; with model.random_init it supplies only the "
        "tokenizer: point it at a tokenizer's folder or Hub id, or set model.path=null for the "
        "built-in byte tokenizer"
    )


def _check_reachable(source: str, model_cfg) -> None:
    """Fetch only the config, so an unreachable or gated model fails in seconds, before anything heavy."""
    try:
        AutoConfig.from_pretrained(source, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        reason = first_line(e, 160)
        raise FtlabError(
            f"could not fetch model '{source}' ({reason}). Connect to the network, export HF_TOKEN if the "
            "model is gated (accept its licence on the Hub first), or set model.path=/local/copy"
        ) from None


def _cached(final: Path, build) -> Path:
    """`final`, built first if absent: `build()` returns (model, tokenizer), saved into a temporary dir that
    is moved into place whole, so a crash never leaves half a cache entry and concurrent builders are fine."""
    if (final / "config.json").is_file():
        return final
    try:
        with atomic(final, directory=True) as tmp:
            model, tokenizer = build()
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError:
        if not (final / "config.json").is_file():  # not a concurrent builder that won the race
            raise
    return final


def _convert_gguf(directory: Path, gguf_file: str, cache: Path) -> Path:
    """Dequantise a GGUF model once into safetensors: a GGUF-loaded model refuses save_pretrained, so the
    weights are moved into a fresh model built from the same config."""
    gguf = directory / gguf_file
    if not gguf.is_file():
        raise FtlabError(f"model.gguf_file: {gguf} not found; check model.path and model.gguf_file")
    with open(gguf, "rb") as f:  # size + head of the file: cheap and changes whenever the file does
        key = hashlib.sha256(f"{gguf.stat().st_size}".encode() + f.read(1 << 20)).hexdigest()[:12]
    final = cache / "gguf" / f"{gguf.stem}-{key}"

    def build():
        info(f"converting {gguf.name} to safetensors in {final} (once; later runs load the cache)")
        loaded = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf_file, dtype=torch.float32)
        config = loaded.config
        del config.quantization_config  # the cache holds plain weights; bitsandbytes may quantise them later
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        return model, AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)

    return _cached(final, build)


def byte_tokenizer():
    """A byte-level ChatML tokenizer built in code: 259 tokens, encodes any text, needs no files."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML
    return tok


def random_config(arch, tokenizer) -> LlamaConfig:
    """The Llama-style config of a model.random_init shape, its vocabulary the tokenizer's."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _build_random(model_cfg, cache: Path, seed: int) -> Path:
    """A random Llama-style model of the configured shape, saved once per (shape, tokenizer, seed)."""
    arch = model_cfg.random_init
    spec = {
        k: getattr(arch, k)
        for k in (
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "max_position_embeddings",
        )
    }
    key = hashlib.sha256(json.dumps([spec, model_cfg.path, seed], sort_keys=True).encode()).hexdigest()[:12]
    final = cache / "random" / key

    def build():
        tokenizer = AutoTokenizer.from_pretrained(model_cfg.path) if model_cfg.path else byte_tokenizer()
        config = random_config(arch, tokenizer)
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32), tokenizer

    return _cached(final, build)


def converted_gguf(model_cfg, cache: Path, holding: str) -> Optional[Path]:
    """The newest folder of ftlab's cache that model.gguf_file was converted into (_convert_gguf) and that holds
    the file `holding`; None before the first run converts it."""
    found = sorted((cache / "gguf").glob(f"{Path(model_cfg.gguf_file).stem}-*/{holding}"))
    return found[-1].parent if found else None


def tokenizer_source(model_cfg, cache_dir: str) -> tuple:
    """(source, gguf_file) to load only the tokenizer from, never weights: for data preview."""
    cache = Path(cache_dir).expanduser()
    if model_cfg.random_init is not None:
        _check_tokenizer_path(model_cfg.path)
        return model_cfg.path, None  # None: the built-in byte tokenizer
    if model_cfg.gguf_file is not None:
        converted = converted_gguf(model_cfg, cache, "tokenizer_config.json")
        if converted is not None:
            return str(converted), None
        return str(Path(model_cfg.path or model_cfg.name).expanduser()), model_cfg.gguf_file
    return resolve_source(model_cfg, cache_dir, seed=0), None
