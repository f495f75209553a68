"""The fast paths change what a step costs, not what it computes: dropout stays dropout, the attention kernel and
PEFT's input casts leave the loss where it was."""

import lightning as L
import pytest
import torch

from conftest import CHAT
from ftlab import FineTune, compose
from ftlab.data.batching import pad
from ftlab.model.dropout import LastInput, SharedDropout
from ftlab.model.fast_paths import EAGER_UP_TO, lora_layers, resolve_attention, set_input_casting
from ftlab.train.module import LoRAModule

N = 1_000_000


def drop(p, x, last=None, seed=0):
    torch.manual_seed(seed)
    return SharedDropout(p, last).train()(x)


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_shared_dropout_drops_at_rate_p_and_scales_the_rest(p):
    y = drop(p, torch.ones(N))
    rate = round(p * 65536) / 65536  # the rate it draws at: p to 1/65536
    assert abs(rate - p) <= 1 / 131072
    dropped = y == 0
    sigma = (p * (1 - p) / N) ** 0.5
    assert abs(dropped.float().mean().item() - p) < 5 * sigma
    assert torch.all(y[~dropped] == 1 / (1 - rate))  # kept elements scaled, so the expectation is the input
    assert abs(y.mean().item() - 1) < 5 * sigma / (1 - p)
    # the four 16-bit slices of one 64-bit draw are independent: neighbours are both dropped p^2 of the time
    pairs = (dropped[0::2] & dropped[1::2]).float().mean().item()
    assert abs(pairs - p * p) < 5 * (p * p * (1 - p * p) / (N / 2)) ** 0.5


def test_shared_dropout_is_seeded_and_off_outside_training():
    x = torch.randn(4, 64, 32)
    assert torch.equal(drop(0.1, x, seed=1), drop(0.1, x, seed=1))
    assert not torch.equal(drop(0.1, x, seed=1), drop(0.1, x, seed=2))
    assert SharedDropout(0.1).eval()(x) is x
    assert SharedDropout(0.0).train()(x) is x


def test_the_gradient_flows_through_kept_elements_only():
    x = torch.ones(10_000, requires_grad=True)
    y = drop(0.2, x)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(y_i)/d(x_i): the scale where kept, 0 where dropped


def test_the_same_tensor_gets_the_same_mask_and_another_tensor_a_new_one():
    last = LastInput()
    q, k = SharedDropout(0.5, last).train(), SharedDropout(0.5, last).train()
    x, other = torch.ones(1000), torch.ones(1000)
    y = q(x)
    assert k(x) is y
    assert not torch.equal(k(other), y)  # equal values, another tensor: its own mask
    unshared = SharedDropout(0.5).train()
    assert not torch.equal(unshared(x), unshared(x))


def dropout_masks(model, batch) -> dict:
    """{projection: where its LoRA dropout zeroed a non-zero input} for the first decoder layer, one training
    forward, and the share of non-zero inputs that is."""
    seen, hooks = {}, []
    layer = model.get_base_model().model.layers[0]
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        parent = layer.self_attn if name[0] in "qkvo" else layer.mlp
        dropout = getattr(parent, name).lora_dropout["default"]
        hooks.append(dropout.register_forward_hook(lambda m, args, y, name=name: seen.__setitem__(name, (args[0], y))))
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in hooks:
        h.remove()
    return {
        name: ((y == 0) & (x != 0), float(((y == 0) & (x != 0)).sum() / (x != 0).sum()))
        for name, (x, y) in seen.items()
    }


def tiny_peft(cache_dir, *extra):
    over = [
        "model=tiny",
        f"data.path={CHAT}",
        "data.cache=false",
        f"cache_dir={cache_dir}",
        "trainer.precision=32-true",
    ]
    ft = FineTune(compose(over + list(extra)))
    base, tokenizer = ft.load_base_model_and_tokenizer()
    return (ft, tokenizer), ft.get_peft_model(base)


def batch_of(recipe, n=4):
    ft, tokenizer = recipe
    rows = ft.tokenize_data(tokenizer).splits["train"].items[:n]
    return pad(rows, tokenizer.pad_token_id)


@pytest.mark.parametrize("shared", [True, False])
def test_projections_reading_one_tensor_share_a_mask_only_when_asked(cache_dir, shared):
    ft, model = tiny_peft(cache_dir, "lora.dropout=0.3", f"lora.shared_dropout={shared}")
    masks = dropout_masks(model, batch_of(ft))
    same = lambda a, b: torch.equal(masks[a][0], masks[b][0])  # noqa: E731
    assert same("q_proj", "k_proj") == shared and same("q_proj", "v_proj") == shared
    assert same("gate_proj", "up_proj") == shared
    assert not same("q_proj", "gate_proj")  # another input (after attention): another mask
    for _, rate in masks.values():  # dropout at 0.3 either way
        assert 0.25 < rate < 0.35


def test_peft_input_casts_off_under_autocast_leave_the_output_bit_identical(cache_dir):
    """Without them the bf16 input reaches the matmuls directly; with them it goes to float32 and back, which is
    exact, so the outputs must match to the bit."""
    ft, model = tiny_peft(cache_dir, "trainer.precision=bf16-mixed", "lora.init_weights=gaussian")
    assert next(model.get_base_model().parameters()).dtype == torch.bfloat16
    batch = batch_of(ft)
    model.eval()
    outputs = []
    for casting in (True, False):
        set_input_casting(lora_layers(model), casting)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits)
    assert torch.equal(outputs[0], outputs[1])


def test_casts_are_off_while_training_under_autocast_and_back_on_for_generation(tiny, capsys):
    """After a bf16-mixed fit the model generates outside autocast, where a bf16 base and float32 adapters need
    PEFT's cast (make demo's evaluation stopped on "expected m1 and m2 to have the same dtype" without it)."""
    seen = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, i):
            seen.append(any(layer.cast_input_dtype_enabled for layer in lora_layers(module.model)))

    class Recipe(FineTune):
        def callbacks(self, run_dir):
            return super().callbacks(run_dir) + [Watch()]

    over = [o for o in tiny if not o.startswith("trainer.precision=")]
    model = Recipe(compose(over + ["trainer.precision=bf16-mixed", "trainer.max_steps=2"])).run().model
    assert seen == [False, False]
    assert all(layer.cast_input_dtype_enabled for layer in lora_layers(model))
    model.eval()
    ids = torch.tensor([[1, 2, 3]])
    assert model.generate(input_ids=ids, max_new_tokens=2, do_sample=False).shape == (1, 5)


def test_auto_attention_is_eager_for_short_rows_on_the_cpu_and_sdpa_otherwise():
    assert resolve_attention("auto", on_gpu=False, longest_row=65)[0] == "eager"
    assert resolve_attention("auto", on_gpu=False, longest_row=EAGER_UP_TO + 1)[0] == "sdpa"
    assert resolve_attention("auto", on_gpu=False, longest_row=0)[0] == "sdpa"  # not training: no rows
    assert resolve_attention("auto", on_gpu=True, longest_row=65)[0] == "sdpa"
    assert resolve_attention("sdpa", on_gpu=False, longest_row=65) == ("sdpa", "model.attn_implementation")


def test_eager_and_sdpa_give_the_same_loss(cache_dir):
    losses = []
    for attn in ("eager", "sdpa"):
        recipe, model = tiny_peft(cache_dir, f"model.attn_implementation={attn}", "lora.init_weights=gaussian")
        assert model.config._attn_implementation == attn
        optim = dict(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), optimizer="adamw", scheduler="constant")
        ft = recipe[0]
        module = LoRAModule(model.eval(), ft.method, ft.cfg.method, **optim, warmup_steps=0, min_lr_ratio=0.0)
        with torch.no_grad():
            total, sums = module(batch_of(recipe))
        losses.append(float(total / sums["units"]))
    assert abs(losses[0] - losses[1]) < 1e-5 * losses[0], losses


def test_a_run_on_short_rows_trains_with_eager_attention(tiny):
    result = FineTune(compose(tiny)).run()
    longest = max(len(r["input_ids"]) for r in result.data.rows)
    assert longest <= EAGER_UP_TO
    assert result["attention"] == "eager" and result.model.config._attn_implementation == "eager"
