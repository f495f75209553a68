"""ftlab.plan: a training step traced on fake tensors, against hand-worked counts and the same step on real tensors."""

import pytest
import torch

from conftest import run_main
from ftlab.config.checks import validate
from ftlab.config.compose import compose
from ftlab.train import limits, plan

B, T = 2, 16
V, H, KV, MLP, LAYERS, R = 259, 64, 32, 128, 2, 16  # model=tiny: byte tokenizer, its random_init shape; lora.r


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    def make(*extra):
        over = ["model=tiny", "trainer.precision=32-true", "lora.dropout=0", f"data.batch_size={B}"]
        over += [f"data.max_seq_len={T}", f"cache_dir={tmp_path_factory.mktemp('cache')}", *extra]
        return validate(compose(over))

    return make


def test_the_traced_split_is_the_hand_count(tiny_cfg):
    split = plan.build(tiny_cfg()).trace(B, T).split
    per_layer = H * H + H * KV + H * KV + H * H + 3 * H * MLP + 2 * H  # q k v o, gate up down, two norms
    frozen = V * H + LAYERS * per_layer + H  # embedding (tied to the head), layers, final norm
    rotary = 2 * (H // 4 // 2)  # inv_freq and original_inv_freq: head_dim / 2 each
    assert split["weights"] == 4 * (frozen + rotary)
    lora = LAYERS * R * ((H + H) + (H + KV) * 2 + (H + H) + (H + MLP) * 3)  # A and B of each of the 7 linears
    assert split["adapter"] == 4 * lora
    # AdamW: two moments per trainable value, and a float32 step count per trainable tensor (A and B, 7 per layer)
    assert split["optimizer"] == 2 * 4 * lora + 4 * (2 * 7 * LAYERS)
    # the peak is in the backward pass through the loss: the saved log-softmax, the gradient the loss sends and the
    # one it passes on to the head, each [B, T-1, V] in float32 (T-1: the last position predicts nothing); a few
    # scalars beside
    block = B * (T - 1) * V * 4
    assert 3 * block <= split["logits"] <= 3 * block + 64


def test_fake_tensors_allocate_what_real_ones_do(tiny_cfg):
    """The same step, traced on fake tensors and run on real ones (random weights), counted by the same tracker."""
    cfg = tiny_cfg()
    assert plan.build(cfg).trace(B, T).split == plan.build(cfg, real=True).trace(B, T).split
    # with gradient checkpointing the traced model builds its attention mask where the real one skips it: a little
    # more, never less
    cfg = tiny_cfg("model.gradient_checkpointing=true")
    fake, real = plan.build(cfg).trace(B, T).peak, plan.build(cfg, real=True).trace(B, T).peak
    assert real <= fake <= 1.03 * real


def test_switches_and_strategies_move_the_peak_as_they_should(tiny_cfg):
    cfg = tiny_cfg()
    model = plan.build(cfg)
    traced = model.trace(4, T)
    assert model.trace(4, T) is traced  # traced once
    # activations and logits grow with the micro-batch, linearly: the same increment from 2 to 4 as from 4 to 6
    grow = [model.trace(n, T).split["activations"] + model.trace(n, T).split["logits"] for n in (2, 4, 6)]
    assert grow[2] - grow[1] == grow[1] - grow[0] > 0
    checkpointed = plan.build(tiny_cfg("model.gradient_checkpointing=true")).trace(4, T).split
    assert checkpointed["activations"] < traced.split["activations"]
    ddp = limits.per_device(traced, tiny_cfg("trainer.devices=2", "trainer.strategy=ddp"), model.setup)
    assert ddp["gradients"] == traced.split["gradients"] + traced.split["adapter"]
    fsdp = limits.per_device(traced, cfg, model.setup, strategy="fsdp", devices=2)
    assert fsdp["weights"] == -(-traced.split["weights"] // 2) + model.setup.layer_bytes
    assert fsdp["optimizer"] == -(-traced.split["optimizer"] // 2)
    assert fsdp["activations"] == traced.split["activations"]


def test_the_limits_are_the_largest_that_fit(tiny_cfg):
    model = plan.build(tiny_cfg())

    def total(step):
        return step.peak

    usable = model.trace(5, T).peak
    assert limits.largest_batch(model, T, usable, total) == 5
    assert limits.largest_batch(model, T, model.trace(1, T).peak - 1, total) == 0
    usable = model.trace(2, 96).peak
    assert limits.longest_sequence(model, 2, 64, usable, total, step=16) == 96


def test_the_shipped_configs_are_the_published_models():
    """What ftlab.plan builds the model presets from, without the Hub: each with its published parameter count."""
    from transformers import AutoModelForCausalLM

    from ftlab.model.architecture import SHIPPED, architecture

    published = {"llama3": 8_030_261_248, "qwen2.5": 7_615_616_512, "mistral": 7_248_023_552}
    assert len(list(SHIPPED.glob("*.json"))) == len(published)
    for preset, count in published.items():
        config, where = architecture(validate(compose([f"model={preset}"])).model, "~/.cache/ftlab")
        assert where == "ftlab's copy of its config.json"
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        assert sum(p.numel() for p in model.parameters()) == count, preset


@pytest.mark.parametrize(
    "args, message",
    [
        (["model=llama3", "model.name=someone/unknown-7b"], "hf download someone/unknown-7b config.json"),
        (["quant=8bit"], "quant=8bit: ftlab.plan traces 4-bit"),
        (["method=grpo"], "method=grpo generates its own answers"),
        (["plan.device_memory=lots"], "plan.device_memory=lots is not a size"),
        (["plan.devices=2"], "unknown option 'plan.devices'"),
    ],
)
def test_refusals_are_one_line(args, message, capsys, workdir):
    result = run_main(*args, module="ftlab.plan", capsys=capsys)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_4bit_base_is_traced_with_and_without_double_quantization(tiny_cfg):
    """The quantization constants by hand: per 64-weight block a float32 absmax, or with double quantization an
    8-bit one, plus per weight the constants' own state (a float32 absmax per 256 blocks, its 256-entry float32
    code book and a float32 offset). On a model this small the code books outweigh what the 8 bits save."""
    double = plan.build(tiny_cfg("quant=4bit", "trainer.precision=bf16-mixed")).trace(B, T).split
    single = plan.build(tiny_cfg("quant=4bit", "quant.double_quant=false", "trainer.precision=bf16-mixed")).trace(B, T)
    weights = [H * H, H * KV, H * KV, H * H, H * MLP, H * MLP, H * MLP] * LAYERS  # the 4-bit layers
    blocks = [n // 64 for n in weights]
    assert single.split["weights"] - double["weights"] == sum(3 * b - 4 * -(-b // 256) - 1024 - 4 for b in blocks)
