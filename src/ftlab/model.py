"""Base model, tokenizer and LoRA adapters, from the `model`, `quant` and `lora` config groups.

Every model ends up loaded by `from_pretrained` from one directory or Hub id (`resolve_source`), so
quantization and dtype handling are the same whether the weights came from the Hub, a local copy, a GGUF
file (dequantised once into the cache) or a random initialisation (built once into the cache).
"""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ftlab.console import info
from ftlab.errors import FtlabError, first_line

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_source(model_cfg, cache_dir: str, seed: int) -> str:
    """Where `from_pretrained` loads from: ftlab's cache for GGUF and random models, else `path` or `name`."""
    cache = Path(cache_dir).expanduser()
    if model_cfg.random_init is not None:
        return str(_build_random(model_cfg, cache, seed))
    if model_cfg.gguf_file is not None:
        return str(_convert_gguf(Path(model_cfg.path or model_cfg.name), model_cfg.gguf_file, cache))
    source = model_cfg.path or model_cfg.name
    if model_cfg.path is not None and not Path(source).expanduser().is_dir():
        raise FtlabError(f"model.path={source} is not a directory; point it at a downloaded model "
                         "(config.json + weights)")
    _check_reachable(source, model_cfg)
    return str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source


def _check_reachable(source: str, model_cfg) -> None:
    """Fetch only the config, so an unreachable or gated model fails in seconds, before anything heavy."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(source, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        reason = first_line(e, 160)
        raise FtlabError(
            f"could not fetch model '{source}' ({reason}). Connect to the network, export HF_TOKEN if the "
            "model is gated (accept its licence on the Hub first), or set model.path=/local/copy") from None


def _cached(final: Path, build) -> Path:
    """`final`, built first if absent: `build()` returns (model, tokenizer), saved into a temporary dir that
    is moved into place whole, so a crash never leaves half a cache entry and concurrent builders are fine."""
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".tmp-"))
    try:
        model, tokenizer = build()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, final)
    except OSError:
        if not (final / "config.json").is_file():  # not a concurrent builder that won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_gguf(directory: Path, gguf_file: str, cache: Path) -> Path:
    """Dequantise a GGUF model once into safetensors: a GGUF-loaded model refuses save_pretrained, so the
    weights are moved into a fresh model built from the same config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def _build_random(model_cfg, cache: Path, seed: int) -> Path:
    """A random Llama-style model of the configured shape, saved once per (shape, tokenizer, seed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    arch = model_cfg.random_init
    spec = {k: getattr(arch, k) for k in ("hidden_size", "intermediate_size", "num_layers", "num_heads",
                                          "num_kv_heads", "max_position_embeddings")}
    key = hashlib.sha256(json.dumps([spec, model_cfg.path, seed], sort_keys=True).encode()).hexdigest()[:12]
    final = cache / "random" / key

    def build():
        tokenizer = AutoTokenizer.from_pretrained(model_cfg.path) if model_cfg.path else byte_tokenizer()
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=arch.hidden_size,
                             intermediate_size=arch.intermediate_size, num_hidden_layers=arch.num_layers,
                             num_attention_heads=arch.num_heads, num_key_value_heads=arch.num_kv_heads,
                             max_position_embeddings=arch.max_position_embeddings, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32), tokenizer

    return _cached(final, build)


def tokenizer_source(model_cfg, cache_dir: str) -> tuple:
    """(source, gguf_file) to load only the tokenizer from, never weights: for data preview."""
    cache = Path(cache_dir).expanduser()
    if model_cfg.random_init is not None:
        return model_cfg.path, None  # None: the built-in byte tokenizer
    if model_cfg.gguf_file is not None:
        converted = sorted((cache / "gguf").glob(f"{Path(model_cfg.gguf_file).stem}-*/tokenizer_config.json"))
        if converted:
            return str(converted[-1].parent), None
        return str(Path(model_cfg.path or model_cfg.name).expanduser()), model_cfg.gguf_file
    return resolve_source(model_cfg, cache_dir, seed=0), None


def load_tokenizer(source, model_cfg, gguf_file=None):
    """The tokenizer, padding on the right; its chat template is settled by templates.apply."""
    from transformers import AutoTokenizer

    if source is None:
        tokenizer = byte_tokenizer()
    else:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(source, revision=model_cfg.revision,
                                                  trust_remote_code=model_cfg.trust_remote_code, **kwargs)
    if tokenizer.pad_token_id is None:  # padding is masked out of loss and attention, so any id will do
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def resolve_precision(precision: str, accelerator: str) -> tuple:
    """(precision, why) with trainer.precision=auto settled for this machine."""
    if precision != "auto":
        return precision, "trainer.precision"
    if accelerator == "cpu" or not torch.cuda.is_available():
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return "bf16-mixed", "auto: this CPU computes in bfloat16 natively"
        return "32-true", "auto: this CPU has no native bfloat16; emulated, it is ~100x slower than float32"
    if torch.cuda.is_bf16_supported():
        return "bf16-mixed", "auto: this GPU supports bfloat16"
    return "16-mixed", "auto: this GPU has no bfloat16"


def _precision_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0], torch.float32)


def weight_dtype(model_cfg, precision: str) -> torch.dtype:
    """auto: the frozen weights in the dtype the matmuls run in, so autocast need not cast them every step."""
    if model_cfg.dtype != "auto":
        return DTYPES[model_cfg.dtype]
    return _precision_dtype(precision)


def compute_dtype(quant_cfg, precision: str) -> torch.dtype:
    return _precision_dtype(precision) if quant_cfg.compute_dtype == "auto" else DTYPES[quant_cfg.compute_dtype]


def quantization_config(quant_cfg, precision: str):
    from transformers import BitsAndBytesConfig

    if quant_cfg.bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_cfg.quant_type,
                                  bnb_4bit_use_double_quant=quant_cfg.double_quant,
                                  bnb_4bit_compute_dtype=compute_dtype(quant_cfg, precision))
    if quant_cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def describe_quant(q, precision: str) -> str:
    if q.bits == 4:
        dtype = str(compute_dtype(q, precision)).replace("torch.", "")
        return f"(4-bit {q.quant_type}{', double quant' if q.double_quant else ''}, compute {dtype})"
    return "(8-bit)" if q.bits == 8 else "(no quantization)"


def load_base_model(source: str, model_cfg, quant_cfg, accelerator: str, precision: str = "32-true"):
    """`precision`: trainer.precision as resolve_precision settled it."""
    from transformers import AutoModelForCausalLM

    kwargs = dict(dtype=weight_dtype(model_cfg, precision), attn_implementation=model_cfg.attn_implementation,
                  revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code)
    quant = quantization_config(quant_cfg, precision)
    if quant is not None:
        # bitsandbytes places quantised weights at load time, so the target device is chosen here
        kwargs.update(quantization_config=quant,
                      device_map={"": "cpu" if accelerator == "cpu" or not torch.cuda.is_available() else 0})
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except ImportError as e:
        raise FtlabError(f"quant.bits={quant_cfg.bits} needs bitsandbytes: {first_line(e)}") from None
    model.config.use_cache = False  # the KV cache only costs memory in training
    if quant_cfg.bits == 4:
        keep_4bit_trainable_on_cpu(model)
    return model


def keep_4bit_trainable_on_cpu(model) -> None:
    """bitsandbytes repacks a 4-bit layer's weights for a faster CPU kernel the first time it runs in eval
    mode without grad (as validation does) and never unpacks them; that kernel has no backward, so every
    later training step silently drops the gradient flowing through the frozen base layers. Opt out."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def add_lora(model, lora_cfg, quantized: bool, gradient_checkpointing: bool):
    """Wrap `model` with LoRA adapters; only the adapters (and `modules_to_save`) are trainable."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:  # casts norms to fp32 and makes inputs require grad, which k-bit training needs
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets = list(lora_cfg.target_modules)
    config = LoraConfig(
        r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout, bias=lora_cfg.bias,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        use_rslora=lora_cfg.use_rslora, use_dora=lora_cfg.use_dora,
        init_lora_weights=True if lora_cfg.init_weights == "default" else lora_cfg.init_weights,
        modules_to_save=list(lora_cfg.modules_to_save) or None, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if "Linear" in type(m).__name__})
        raise FtlabError(f"lora.target_modules={targets}: {first_line(e)} This model's linear layers: "
                         f"{', '.join(linear)}; e.g. lora.target_modules=[all-linear]") from None
