"""A merged transformers model as one GGUF file, written in Python with the `gguf` package (no llama.cpp build).

What llama.cpp needs, and how it differs from the transformers checkpoint:
- the architecture's hyperparameters under llama.cpp's key names (`llama.block_count`, ...);
- tensors under llama.cpp's names (`blk.0.attn_q.weight`), found with gguf's own name map;
- for llama-family models (Llama, SmolLM2, Mistral) the rows of the Q and K projections permuted: transformers
  rotates the two halves of each head (rotate_half), llama.cpp rotates adjacent pairs, so each head's rows are
  interleaved. Qwen2 uses the half rotation in llama.cpp too (NEOX rope) and is written as is;
- 1-D tensors (norms, biases) in float32 whatever the file's dtype, as llama.cpp's converter writes them;
- a tied output projection is not written: llama.cpp (and transformers' reader) reuse the embedding;
- Llama 3.1's rope scaling as llama.cpp's rope_freqs tensor, one divisor per rotary frequency.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gguf
import numpy as np
import torch

from ftlab.exports import gguf_tokenizer
from ftlab.utils.errors import FtlabError


@dataclass(frozen=True)
class Arch:
    gguf: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's rope for this architecture rotates adjacent pairs


ARCHES = {
    "llama": Arch(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "mistral": Arch(gguf.MODEL_ARCH.LLAMA, permute_qk=True),  # llama.cpp has no separate Mistral architecture
    "qwen2": Arch(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
}
Q = gguf.GGMLQuantizationType
DTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}


def check_supported(config) -> Arch:
    """The architecture's GGUF description, or a one-line refusal naming what is supported."""
    model_type = config.model_type
    if model_type not in ARCHES:
        raise FtlabError(
            f"format=gguf writes the {', '.join(ARCHES)} architectures, and this model is {model_type}; "
            "export format=merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    rope_type = _rope(config).get("rope_type", _rope(config).get("type", "default"))
    if rope_type not in ("default", "llama3") or (rope_type == "llama3" and not ARCHES[model_type].permute_qk):
        raise FtlabError(
            f"format=gguf writes Llama 3's rope scaling but not {rope_type} (the model's config.json); export "
            "format=merged and convert that folder with llama.cpp's convert_hf_to_gguf.py"
        )
    return ARCHES[model_type]


def _rope(config) -> dict:
    return getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope_factors(config) -> Optional[np.ndarray]:
    """Llama 3's rope scaling as llama.cpp stores it (rope_freqs.weight): for each rotary frequency the divisor
    llama.cpp applies to it. Llama 3.1 leaves high frequencies alone, divides low ones by `factor`, and blends in
    between by wavelength; None for a model without it."""
    rope = _rope(config)
    if rope.get("rope_type") != "llama3":
        return None
    dim = _head_dim(config)
    freqs = 1.0 / rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    context = rope["original_max_position_embeddings"]
    wavelength = 2 * np.pi / freqs
    smooth = (context / wavelength - low) / (high - low)
    blended = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(wavelength < context / high, 1.0, np.where(wavelength > context / low, factor, blended))
    return factors.astype(np.float32)


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' Q or K projection rows (per head: first halves, then second halves of the rotary pairs)
    in llama.cpp's order (per head: the pairs side by side). `n_head`: the heads these rows belong to."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def rope_difference(path: Path, config) -> Optional[float]:
    """How far the file's rope_freqs are from the divisors transformers' own Llama 3 rope applies (its unscaled
    over its scaled frequencies), relative; None without rope scaling. transformers' GGUF reader ignores
    rope_freqs, so the export's reload takes the rope from the config and this proves the file's copy."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if rope_factors(config) is None:
        return None
    stored = next(t for t in gguf.GGUFReader(str(path)).tensors if t.name.startswith("rope_freqs"))
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    dim = _head_dim(config)
    plain = 1.0 / _rope(config)["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    want = (plain / scaled.double()).numpy()
    return float(np.max(np.abs(np.asarray(stored.data, dtype=np.float64) - want) / want))


def tensor_type(shape: tuple, dtype: str) -> gguf.GGMLQuantizationType:
    """1-D tensors stay float32; q8_0 needs rows in whole blocks of 32 and falls back to f16 where they aren't."""
    if len(shape) == 1:
        return Q.F32
    if dtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return DTYPES[dtype]


def gguf_tensors(model, arch: Arch, dtype: str):
    """(llama.cpp name, encoded array, its type) for each tensor the file holds."""
    config = model.config
    names = gguf.get_tensor_name_map(arch.gguf, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise FtlabError(f"format=gguf: no llama.cpp name for the tensor {name}; export format=merged instead")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if arch.permute_qk and new.endswith("attn_q.weight"):
            data = permute_qk(data, config.num_attention_heads)
        elif arch.permute_qk and new.endswith("attn_k.weight"):
            data = permute_qk(data, config.num_key_value_heads)
        kind = tensor_type(data.shape, dtype)
        yield new, gguf.quants.quantize(data, kind), kind
    factors = rope_factors(config)
    if factors is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors, Q.F32


def add_hyperparameters(writer: gguf.GGUFWriter, config) -> None:
    head_dim = _head_dim(config)
    rope = _rope(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:  # llama.cpp assumes hidden/heads otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)


def add_sampling(writer: gguf.GGUFWriter, generation) -> None:
    """The run's generation settings as llama.cpp's sampling defaults (general.sampling.*), which llama.cpp takes
    when its command line sets none. Greedy is temperature 0; top_k 0 is no limit in both."""
    if generation.do_sample:
        writer.add_sampling_temp(generation.temperature)
        writer.add_sampling_top_p(generation.top_p)
        writer.add_sampling_top_k(generation.top_k)
    else:
        writer.add_sampling_temp(0.0)
    writer.add_sampling_penalty_repeat(generation.repetition_penalty)
    if generation.repetition_penalty != 1.0:
        writer.add_sampling_penalty_last_n(-1)  # transformers penalizes the whole text, llama.cpp the last 64 tokens


def write(path: Path, model, tokenizer, dtype: str, name: str, end_of_turn: Optional[str], generation=None) -> dict:
    """Write `model` (transformers, merged, any float dtype), `tokenizer` and the `generation` settings (ftlab's
    GenerationOptions; None: none) to `path`; what was written."""
    config = model.config
    arch = check_supported(config)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch.gguf])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hyperparameters(writer, config)
    if generation is not None:
        add_sampling(writer, generation)
    tokenizer_info = gguf_tokenizer.add_tokenizer(writer, tokenizer, config.vocab_size, end_of_turn)
    kinds = {}
    for new, data, kind in gguf_tensors(model, arch, dtype):
        writer.add_tensor(new, data, raw_dtype=kind)  # quantized rows are bytes; the writer works out their shape
        kinds[kind.name] = kinds.get(kind.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": gguf.MODEL_ARCH_NAMES[arch.gguf], "tensor_types": kinds, "tokenizer": tokenizer_info}
