"""The base model and tokenizer as training needs them (precision, quantization), and LoRA adapters on top."""

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from ftlab.model.dropout import use_shared_dropout
from ftlab.model.source import byte_tokenizer
from ftlab.utils import ranks
from ftlab.utils.errors import FtlabError, first_line

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(source, model_cfg, gguf_file=None):
    """The tokenizer, padding on the right; its chat template is settled by templates.apply."""
    if source is None:
        tokenizer = byte_tokenizer()
    else:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code, **kwargs
        )
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


def device_for(accelerator: str) -> str:
    """Where a finished run's model goes for inference: the GPU when asked for and present, else the CPU."""
    return "cuda" if accelerator in ("gpu", "auto") and torch.cuda.is_available() else "cpu"


def precision_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0], torch.float32)


def weight_dtype(model_cfg, precision: str) -> torch.dtype:
    """auto: the frozen weights in the dtype the matmuls run in, so autocast need not cast them every step."""
    if model_cfg.dtype != "auto":
        return TORCH_DTYPES[model_cfg.dtype]
    return precision_dtype(precision)


def compute_dtype(quant_cfg, precision: str) -> torch.dtype:
    return precision_dtype(precision) if quant_cfg.compute_dtype == "auto" else TORCH_DTYPES[quant_cfg.compute_dtype]


def quantization_config(quant_cfg, precision: str, sharded: bool = False):
    """`sharded`: FSDP will shard the model. It flattens parameters of one dtype only, so the packed 4-bit
    weights are stored in the compute dtype (PEFT's FSDP + QLoRA recipe) instead of uint8."""
    if quant_cfg.bits == 4:
        dtype = compute_dtype(quant_cfg, precision)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant_cfg.quant_type,
            bnb_4bit_use_double_quant=quant_cfg.double_quant,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype if sharded else torch.uint8,
        )
    if quant_cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def describe_quant(q, precision: str) -> str:
    if q.bits == 4:
        dtype = str(compute_dtype(q, precision)).replace("torch.", "")
        return f"(4-bit {q.quant_type}{', double quant' if q.double_quant else ''}, compute {dtype})"
    return "(8-bit)" if q.bits == 8 else "(no quantization)"


def load_base_model(
    source: str, model_cfg, quant_cfg, accelerator: str, precision: str, attention: str, sharded: bool = False
):
    """`precision`: trainer.precision as resolve_precision settled it; `attention`: the attention implementation
    (fast_paths.resolve_attention); `sharded`: FSDP will shard the model."""
    kwargs = dict(
        dtype=weight_dtype(model_cfg, precision),
        attn_implementation=attention,
        revision=model_cfg.revision,
        trust_remote_code=model_cfg.trust_remote_code,
    )
    quant = quantization_config(quant_cfg, precision, sharded)
    if quant is not None:
        # bitsandbytes places quantised weights at load time, so the target device is chosen here: each rank
        # of a multi-GPU job its own
        on_cpu = accelerator == "cpu" or not torch.cuda.is_available()
        kwargs.update(quantization_config=quant, device_map={"": "cpu" if on_cpu else ranks.local_rank()})
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


def decoder_layer_classes(model) -> set:
    """The classes of the model's decoder layers (its _no_split_modules): what FSDP shards and checkpoints as units,
    and what trainer.compile compiles."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise FtlabError(
            f"no decoder layer class found in {type(base).__name__} ({sorted(names) or 'the model names none'})"
        )
    return found


def add_lora(model, lora_cfg, quantized: bool, gradient_checkpointing: bool, sharded: bool = False):
    """Wrap `model` with LoRA adapters; only the adapters (and `modules_to_save`) are trainable. `sharded`: FSDP
    will shard the model, which needs the frozen weights of a layer in one dtype."""
    if quantized and not sharded:  # casts norms to fp32 and makes inputs require grad, which k-bit training needs
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif quantized:  # FSDP + QLoRA: norms stay in the compute dtype, as the 4-bit storage is (quantization_config)
        model.enable_input_require_grads()
    elif gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets = list(lora_cfg.target_modules)
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        bias=lora_cfg.bias,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        use_rslora=lora_cfg.use_rslora,
        use_dora=lora_cfg.use_dora,
        init_lora_weights=True if lora_cfg.init_weights == "default" else lora_cfg.init_weights,
        modules_to_save=list(lora_cfg.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as e:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if "Linear" in type(m).__name__})
        raise FtlabError(
            f"lora.target_modules={targets}: {first_line(e)} This model's linear layers: "
            f"{', '.join(linear)}; e.g. lora.target_modules=[all-linear]"
        ) from None
    use_shared_dropout(model, shared=lora_cfg.shared_dropout)
    return model
