"""A run's LoRA adapter alone as a GGUF file in llama.cpp's adapter layout (`llama-cli -m base.gguf --lora
adapter.gguf`, Ollama's `ADAPTER`), for users who keep one base model and swap adapters.

The layout llama.cpp reads: general.type=adapter, adapter.type=lora, adapter.lora.alpha, and for each adapted
weight W (named as in the base model's GGUF, `blk.0.attn_q.weight`) two tensors, `W.lora_a` (rank x inputs)
and `W.lora_b` (outputs x rank). llama.cpp adds (alpha / rank) * B @ A to W, where rank is B's inner size; PEFT
scales by lora_alpha / r, or by lora_alpha / sqrt(r) with rsLoRA, so the alpha written is the one that gives
PEFT's scale. B's rows of the Q and K projections are permuted as the base model's rows are (gguf_model.py).

`apply` does llama.cpp's arithmetic on a transformers model, reading the file back: the export's check.
"""

import math
from pathlib import Path

import gguf
import torch
from safetensors.torch import load_file

from ftlab.exports import gguf_model
from ftlab.exports.vllm import read_adapter_config
from ftlab.utils.errors import FtlabError

PREFIX = "base_model.model."


def refusals(config: dict) -> list:
    """What llama.cpp's LoRA adapters cannot hold, one line each naming the option that avoids it."""
    out = []
    if config.get("use_dora"):
        out.append("llama.cpp adapters are plain LoRA, not DoRA; train with lora.use_dora=false or export format=gguf")
    if config.get("modules_to_save"):
        out.append("llama.cpp adapters hold no fully trained modules (modules_to_save); export format=gguf")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        out.append("llama.cpp adapters have one rank and one alpha; this adapter sets them per module")
    if config.get("bias", "none") != "none":
        out.append("llama.cpp adapters hold no biases; train with lora.bias=none or export format=gguf")
    return out


def scale(config: dict) -> float:
    r = config["r"]
    return config["lora_alpha"] / (math.sqrt(r) if config.get("use_rslora") else r)


def _pairs(adapter_dir: Path) -> dict:
    """{base weight name (model.layers.0.self_attn.q_proj.weight): (A, B)} from the PEFT safetensors."""
    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    pairs = {}
    for key, tensor in state.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            raise FtlabError(
                f"the adapter holds {key}, which is not a LoRA A/B matrix of a linear layer; llama.cpp adapters "
                "hold only those: export format=gguf"
            )
        module, _, rest = key.removeprefix(PREFIX).partition(".lora_")
        pairs.setdefault(module + ".weight", {})[rest[0]] = tensor.to(torch.float32)
    return {name: (ab["A"], ab["B"]) for name, ab in pairs.items()}


def write(path: Path, adapter_dir: Path, model_config, dtype: str, name: str) -> dict:
    """Write the adapter in `adapter_dir` (PEFT) for a base model of `model_config`; what was written."""
    config = read_adapter_config(adapter_dir)
    refused = refusals(config)
    if refused:
        raise FtlabError(refused[0])
    arch = gguf_model.check_supported(model_config)
    names = gguf.get_tensor_name_map(arch.gguf, model_config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch.gguf])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, scale(config) * config["r"])  # alpha / rank = PEFT's scale
    count = 0
    for weight, (a, b) in sorted(_pairs(adapter_dir).items()):
        target = names.get_name(weight, try_suffixes=(".weight",))
        if target is None:
            raise FtlabError(f"format=gguf-adapter: no llama.cpp name for {weight}; export format=gguf instead")
        b = b.numpy()
        if arch.permute_qk and target.endswith("attn_q.weight"):
            b = gguf_model.permute_qk(b, model_config.num_attention_heads)
        elif arch.permute_qk and target.endswith("attn_k.weight"):
            b = gguf_model.permute_qk(b, model_config.num_key_value_heads)
        for suffix, data in ((".lora_a", a.numpy()), (".lora_b", b)):
            kind = gguf_model.tensor_type(data.shape, dtype)
            writer.add_tensor(target + suffix, gguf.quants.quantize(data, kind), raw_dtype=kind)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"adapted_weights": count, "rank": config["r"], "scale": scale(config)}


def apply(path: Path, model) -> int:
    """Add the adapter GGUF at `path` to `model`'s weights in place, as llama.cpp does; the weights changed."""
    reader = gguf.GGUFReader(str(path))
    alpha = float(reader.fields[gguf.Keys.Adapter.LORA_ALPHA].parts[-1][0])
    arch = gguf_model.check_supported(model.config)
    names = gguf.get_tensor_name_map(arch.gguf, model.config.num_hidden_layers)
    params = dict(model.named_parameters())
    by_gguf = {names.get_name(n, try_suffixes=(".weight", ".bias")): n for n in params}
    tensors = {t.name: t for t in reader.tensors}
    for name in [n.removesuffix(".lora_a") for n in tensors if n.endswith(".lora_a")]:
        a, b = (_read(tensors[f"{name}.lora_{x}"]) for x in "ab")
        if arch.permute_qk and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = model.config.num_attention_heads if "attn_q" in name else model.config.num_key_value_heads
            b = _unpermute(b, heads)
        with torch.no_grad():
            params[by_gguf[name]] += (alpha / b.shape[1]) * (b @ a)
    return len(tensors) // 2


def _read(tensor) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy()).reshape(
        tuple(int(d) for d in reversed(tensor.shape))
    )


def _unpermute(b: torch.Tensor, n_head: int) -> torch.Tensor:
    rows = b.shape[0]
    return b.reshape(n_head, rows // n_head // 2, 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)
