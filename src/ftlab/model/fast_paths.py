"""Ways to run the same training step faster, chosen per device: the attention kernel, PEFT's input casts under
autocast, Liger's fused kernels and torch.compile of the decoder layers. None changes what the step computes
beyond floating-point rounding (docs/contributors/cpu-performance.md has the measurements, docs/performance.md the
tolerances the tests hold)."""

from typing import List

from peft.tuners.tuners_utils import BaseTunerLayer

from ftlab.model.load import decoder_layer_classes
from ftlab.utils.errors import FtlabError, first_line

# On a CPU, eager attention (two matmuls and a softmax) ran forward + backward faster than PyTorch's SDPA kernel
# up to rows of about 200 tokens and slower beyond (docs/contributors/cpu-performance.md#what-ftlab-does-on-the-cpu).
EAGER_UP_TO = 192

LIGER_KERNELS = dict(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False)


def resolve_attention(setting: str, on_gpu: bool, longest_row: int = 0) -> tuple:
    """(attention implementation, why) with model.attn_implementation=auto settled. `longest_row`: the longest
    training row in tokens (0 when not training)."""
    if setting != "auto":
        return setting, "model.attn_implementation"
    if on_gpu:
        return "sdpa", "auto: PyTorch's fused attention on the GPU"
    if 0 < longest_row <= EAGER_UP_TO:
        return (
            "eager",
            f"auto: faster than SDPA on the CPU for rows up to {EAGER_UP_TO} tokens; the longest is {longest_row}",
        )
    return "sdpa", f"auto: faster than eager on the CPU for rows over {EAGER_UP_TO} tokens"


def lora_layers(model) -> List[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def set_input_casting(layers: List[BaseTunerLayer], enabled: bool) -> None:
    """PEFT casts each adapter's input to the adapter's dtype (float32) before its dropout and matmuls. Under
    autocast the matmuls cast it straight back to bfloat16, so the casts only cost time: a copy of the input per
    projection, forward and backward. Off under autocast, on outside it (generation keeps mixed dtypes apart)."""
    for layer in layers:
        layer.cast_input_dtype_enabled = enabled


def apply_liger(model) -> None:
    """Liger's Triton kernels for RoPE, RMSNorm and SwiGLU on this model (the loss's fused linear cross-entropy is
    LoRAModule's). Before LoRA is added: Liger swaps the modules' forwards, PEFT then wraps the linear layers."""
    try:
        import liger_kernel.transformers as liger
    except ImportError as e:
        raise FtlabError(
            "model.liger_kernels=true needs the liger-kernel package (pip install -e '.[gpu]' in the checkout): "
            f"{first_line(e)}"
        ) from None
    model_type = model.config.model_type
    patch = getattr(liger, f"apply_liger_kernel_to_{model_type}", None)
    if patch is None:
        raise FtlabError(
            f"model.liger_kernels=true: Liger has no kernels for {model_type} models; set model.liger_kernels=false"
        )
    try:
        patch(model=model, **LIGER_KERNELS)
    except TypeError as e:  # a Liger release without one of these switches for this architecture
        raise FtlabError(f"model.liger_kernels=true: {first_line(e)}; set model.liger_kernels=false") from None


def fused_linear_cross_entropy():
    """Liger's lm_head + cross-entropy in chunks, summed over the labelled tokens: the vocabulary-sized logits are
    never held whole."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="sum")


def compile_layers(model) -> int:
    """torch.compile each decoder layer in place (the layers are alike, so one graph serves all); returns how many.
    The embedding, head and loss stay eager: the head's output length changes with every batch."""
    classes = decoder_layer_classes(model)
    layers = [m for m in model.modules() if type(m) in classes]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
