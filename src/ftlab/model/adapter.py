"""A saved LoRA adapter on a base model: checking that it fits, loading it, merging it into the weights."""

import json
from pathlib import Path

import torch
from peft import PeftModel
from safetensors import safe_open

from ftlab.utils.console import info
from ftlab.utils.errors import FtlabError


def load(base, adapter: Path, source: str):
    """`base` with the adapter saved in `adapter` on top, in eval mode; refused first if it does not fit."""
    check_fits(base, adapter, source)
    return PeftModel.from_pretrained(base, adapter).eval()


def check_fits(base, adapter: Path, source: str) -> None:
    """Refuse an adapter trained on another base model, naming the first layer that does not fit, before PEFT
    fails with a page of size mismatches (or, worse, loads onto a model of the same shapes)."""
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise FtlabError(f"{weights} is missing; the adapter dir is incomplete: save or download it again")
    config = adapter / "adapter_config.json"
    trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
    modules = dict(base.named_modules())
    problem = None
    with safe_open(str(weights), "pt") as f:
        for key in f.keys():
            kind = "A" if ".lora_A." in key else "B" if ".lora_B." in key else None
            if kind is None:
                continue
            name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(name)
            if module is None:
                problem = f"it adapts {name}, which this base model does not have"
                break
            shape = f.get_slice(key).get_shape()
            want, have = (
                (shape[1], getattr(module, "in_features", None))
                if kind == "A"
                else (shape[0], getattr(module, "out_features", None))
            )
            if have is not None and want != have:
                problem = f"{name} has {have} {'inputs' if kind == 'A' else 'outputs'}, the adapter expects {want}"
                break
    if problem:
        raise FtlabError(
            f"{config}: the adapter was trained on {trained_on} and does not fit the base model loaded "
            f"from {source} ({problem}); load the base it was trained on (model.name= or model.path=)"
        )
    if trained_on and trained_on not in (source, str(Path(source).resolve())):
        info(f"note: the adapter was trained on {trained_on}; its layers fit the base loaded from {source}")


def dequantized(base):
    """A quantized base (as training loaded it) as a plain float32 model: the weights the adapter was trained on."""
    base = base.dequantize(dtype=torch.float32)
    if hasattr(base.config, "quantization_config"):  # a plain model now: loaders must not look for bitsandbytes
        del base.config.quantization_config
    return base


def merge_dequantized(base, adapter: Path):
    """A quantized base dequantized to float32, with the adapter merged in: merging into the quantized weights
    would round the update away."""
    return PeftModel.from_pretrained(dequantized(base), adapter).merge_and_unload()
