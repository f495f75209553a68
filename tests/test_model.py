"""Model loading: quantized layers train correctly on CPU, sources resolve and are cached."""

import pytest
import torch

from ftlab import compose
from ftlab.config.checks import validate
from ftlab.model.load import load_base_model
from ftlab.model.source import resolve_source


def tiny_config(cache_dir, *extra):
    return validate(compose(["model=tiny", f"cache_dir={cache_dir}", *extra]))


def test_4bit_layers_keep_their_gradient_after_validation(cache_dir):
    """An eval forward (validation) must not switch 4-bit layers to bitsandbytes' inference-only kernel,
    whose missing backward would cut the gradient to every adapter below it."""
    import bitsandbytes as bnb

    cfg = tiny_config(cache_dir, "quant=4bit")
    source = resolve_source(cfg.model, str(cache_dir), cfg.seed)
    model = load_base_model(source, cfg.model, cfg.quant, "cpu", "32-true", "sdpa")
    layer = model.model.layers[0].self_attn.q_proj
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(2, 5, weight.shape[1]))
    layer.train()
    x = torch.randn(2, 5, weight.shape[1], requires_grad=True)
    layer(x).float().sum().backward()
    reference = x.detach().clone().requires_grad_()
    (reference @ weight.t()).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, reference.grad, rtol=2e-2, atol=2e-2)  # bf16 compute dtype


def test_random_model_is_built_once_and_cached(cache_dir):
    from pathlib import Path

    cfg = tiny_config(cache_dir)
    first = resolve_source(cfg.model, str(cache_dir), cfg.seed)
    written = (Path(first) / "model.safetensors").stat().st_mtime_ns
    assert resolve_source(cfg.model, str(cache_dir), cfg.seed) == first
    assert (Path(first) / "model.safetensors").stat().st_mtime_ns == written  # loaded, not rebuilt
    assert resolve_source(cfg.model, str(cache_dir), cfg.seed + 1) != first  # the seed is part of the key


@pytest.mark.slow
def test_smollm2_gguf_is_converted_once_into_a_loadable_cache(cache_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = validate(compose([f"cache_dir={cache_dir}"]))
    source = resolve_source(cfg.model, str(cache_dir), cfg.seed)
    assert source.startswith(str(cache_dir / "gguf"))
    assert resolve_source(cfg.model, str(cache_dir), cfg.seed) == source  # second call: cache hit
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    assert "quantization_config" not in model.config.to_dict()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    answer = tokenizer.decode(
        model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1] :], skip_special_tokens=True
    )
    assert "Paris" in answer
