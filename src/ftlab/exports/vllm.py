"""Serving a run's adapter with vLLM, unmerged: `vllm serve BASE --enable-lora --lora-modules NAME=DIR`.

vLLM loads the PEFT adapter folder ftlab writes as it is. What it refuses is checked here from the adapter's own
adapter_config.json, so a run learns it before anyone starts a server: DoRA, extra trained modules
(modules_to_save), per-module ranks or scales, a rank above vLLM's largest, and target modules vLLM's
implementation of the architecture has no LoRA layer for. vLLM serves adapter biases only when started with
--enable-lora-bias, which the command then carries.
"""

import json
import shlex
from pathlib import Path
from typing import List, Optional

from ftlab.exports import model_name

# the values vLLM's --max-lora-rank accepts (its LoRAConfig); the adapter's rank must not exceed the one chosen
MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# the modules vLLM's Llama, Qwen2 and Mistral implementations carry LoRA on (it fuses q/k/v and gate/up itself and
# maps PEFT's per-projection weights onto the fused layers)
LORA_MODULES = {
    arch: {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"}
    for arch in ("llama", "qwen2", "mistral")
}


def read_adapter_config(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))


def max_lora_rank(r: int) -> Optional[int]:
    """The smallest --max-lora-rank that serves rank `r`; None above vLLM's largest."""
    return next((m for m in MAX_LORA_RANKS if m >= r), None)


def problems(config: dict, model_type: str) -> List[str]:
    """What vLLM would refuse in this adapter_config.json, one line each naming the option that fixes it."""
    out = []
    if config.get("use_dora"):
        out.append("vLLM does not serve DoRA adapters; train with lora.use_dora=false (or export a merged model)")
    if config.get("modules_to_save"):
        out.append(
            f"vLLM serves no fully trained extra modules (modules_to_save: {', '.join(config['modules_to_save'])}); "
            "train with lora.modules_to_save=[] (or export a merged model)"
        )
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        out.append("vLLM serves one rank and one alpha for every module; this adapter sets them per module")
    if max_lora_rank(config["r"]) is None:
        out.append(f"vLLM serves ranks up to {MAX_LORA_RANKS[-1]} (this adapter: lora.r={config['r']})")
    supported = LORA_MODULES.get(model_type)
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    if supported is not None:  # vLLM matches a module by the last part of its name (model.layers.0.mlp.up_proj)
        for module in sorted({t.rsplit(".", 1)[-1] for t in targets} - supported):
            out.append(
                f"vLLM has no LoRA layer for '{module}' in {model_type} models (it takes "
                f"{', '.join(sorted(supported))}); leave it out of lora.target_modules"
            )
    return out


def command(base_model: str, name: str, adapter_dir: str, config: dict) -> str:
    """The vllm serve command line that serves `adapter_dir` as model `name` (made a safe model name: letters,
    digits, - _ . kept, anything else a -) on top of `base_model`."""
    name = model_name(name) or "adapter"
    words = ["vllm", "serve", base_model, "--enable-lora", "--lora-modules", f"{name}={adapter_dir}"]
    words += ["--max-lora-rank", str(max_lora_rank(config["r"]) or config["r"])]
    if config.get("bias", "none") != "none":
        words.append("--enable-lora-bias")
    return shlex.join(words)
