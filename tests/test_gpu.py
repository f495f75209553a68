"""The CUDA path: bitsandbytes' GPU kernels, bf16, the device placement of quantized models.

CI has no GPU, so `make test` deselects these (-m "not gpu"); run them where one is:
    .venv/bin/python -m pytest -m gpu tests
"""

import pytest
import torch

from ftlab import FineTune, compose

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("quant", ["none", "4bit", "8bit"])
def test_tiny_trains_on_the_gpu(quant, workdir, tiny):
    over = [o for o in tiny if not o.startswith("trainer.precision=")]
    stats = FineTune(compose(over + ["trainer=gpu", f"quant={quant}", "trainer.precision=bf16-mixed"])).run()
    assert stats["steps"] == 4 and torch.isfinite(torch.tensor(stats["val_loss_after"]))
    assert next(p for p in stats.model.parameters() if p.requires_grad).device.type == "cuda"


# ── several GPUs: each test starts its ranks through the CLI, as a user would ────────────────────────────────
several = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def _gpu_run(workdir, tiny, *extra):
    import json

    from conftest import run_cli, run_dirs

    over = [o for o in tiny if not o.startswith("trainer.precision=")]
    result = run_cli(*over, "trainer.precision=bf16-mixed", "trainer.devices=2", *extra, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(workdir)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@several
@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_ddp_on_two_gpus(quant, workdir, tiny):
    run_dir, metrics = _gpu_run(workdir, tiny, "trainer=ddp", f"quant={quant}")
    assert metrics["steps"] == 4 and len(metrics["peak_memory_gb_per_rank"]) == 2
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


@several
@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_fsdp_shards_the_model_and_saves_the_whole_adapter(quant, workdir, tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftlab.model.source import resolve_source

    run_dir, metrics = _gpu_run(workdir, tiny, "trainer=fsdp", f"quant={quant}")
    assert metrics["steps"] == 4 and torch.isfinite(torch.tensor(metrics["val_loss_after"]))
    # the adapter gathered to rank 0 is whole: it loads onto the base with plain PEFT, every LoRA weight full-size
    cfg = compose(tiny)
    base = AutoModelForCausalLM.from_pretrained(resolve_source(cfg.model, cfg.cache_dir, cfg.seed))
    loaded = PeftModel.from_pretrained(base, run_dir / "adapter")
    a = next(p for n, p in loaded.named_parameters() if "lora_A" in n)
    assert a.shape[0] == cfg.lora.r and a.numel() > 0


# ── the GPU fast paths: each holds the plain path's loss on the same batch ────────────────────────────────────
def _loss(tiny, *extra, precision="bf16-mixed"):
    """The loss of one batch of the tiny model on the GPU, adapters at a fixed random init, no dropout."""
    from ftlab.data.batching import pad
    from ftlab.train.module import LoRAModule

    over = [o for o in tiny if not o.startswith("trainer.precision=")]
    ft = FineTune(
        compose(over + ["trainer=gpu", f"trainer.precision={precision}", "lora.init_weights=gaussian", *extra])
    )
    tokenizer = ft.load_tokenizer(ft.model_source())
    prepared = ft.tokenize_data(tokenizer)
    rows = prepared.splits["train"].items[:4]
    attention = ft.choose_attention(rows, prepared.examples)
    torch.manual_seed(0)
    model = ft.get_peft_model(ft.load_base_model(ft.model_source(), attention)).cuda().eval()  # Liger, compile
    optim = dict(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), optimizer="adamw", scheduler="constant")
    fused = ft.cfg.model.liger_kernels
    module = LoRAModule(model, ft.method, ft.cfg.method, **optim, warmup_steps=0, min_lr_ratio=0.0, fused_loss=fused)
    batch = {k: v.cuda() for k, v in pad(rows, tokenizer.pad_token_id).items()}
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        total, sums = module(batch)
    return float(total / sums["units"])


def test_liger_kernels_hold_the_loss(tiny):
    pytest.importorskip("liger_kernel")
    plain, liger = _loss(tiny), _loss(tiny, "model.liger_kernels=true")
    assert abs(liger - plain) < 2e-2 * plain, (liger, plain)  # bf16 kernels: rounding differs, the math does not


def test_compiled_decoder_layers_hold_the_loss(tiny):
    plain, compiled = _loss(tiny, precision="32-true"), _loss(tiny, "trainer.compile=true", precision="32-true")
    assert abs(compiled - plain) < 1e-4 * plain, (compiled, plain)


def test_flash_attention_2_holds_the_loss(tiny):
    pytest.importorskip("flash_attn")
    plain, flash = _loss(tiny), _loss(tiny, "model.attn_implementation=flash_attention_2")
    assert abs(flash - plain) < 2e-2 * plain, (flash, plain)


@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_the_memory_plan_holds_against_the_gpu(quant, cache_dir):
    """ftlab.plan's traced peak (fake tensors, no GPU) within 10% of torch.cuda.max_memory_allocated over the same
    step run for real: a 100M-parameter model, micro-batch 4 x 512 tokens, bf16-mixed (make gpu-check runs this)."""
    from ftlab.config.checks import validate
    from ftlab.train import plan

    shape = ["hidden_size=1024", "intermediate_size=2816", "num_layers=8", "num_heads=16", "num_kv_heads=4"]
    over = ["model=tiny", *[f"model.random_init.{s}" for s in shape], f"quant={quant}", "trainer=gpu"]
    over += ["trainer.precision=bf16-mixed", "data.batch_size=4", "data.max_seq_len=512", f"cache_dir={cache_dir}"]
    cfg = validate(compose(over))
    planned = plan.build(cfg).trace(4, 512).peak
    _, measured = plan.measure(cfg, 4, 512)
    assert abs(planned - measured) <= 0.1 * measured, (planned, measured)
