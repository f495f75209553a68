"""Packing changes how examples share a row, never what the model learns from them; length grouping and padding."""

import pytest
import torch

from conftest import CHAT
from ftlab import FineTune, compose
from ftlab.data.batching import attention_stays_inside, epoch_order, pack, pad, padding_fraction
from ftlab.methods import METHODS
from ftlab.methods.sft import Options as SftOptions
from ftlab.train.module import LoRAModule
from ftlab.utils.errors import FtlabError


def examples(train_on="assistant"):
    from ftlab.model.source import byte_tokenizer

    ft = FineTune(compose(["model=tiny", f"data.path={CHAT}", f"data.train_on={train_on}", "data.cache=false"]))
    return ft.tokenize_data(byte_tokenizer()).splits["train"].items


@pytest.fixture(scope="module")
def tiny_model(cache_dir):
    def build(attn):
        ft = FineTune(
            compose(
                [
                    "model=tiny",
                    f"cache_dir={cache_dir}",
                    f"model.attn_implementation={attn}",
                    "trainer.precision=32-true",
                ]
            )
        )
        base, _ = ft.load_base_model_and_tokenizer()
        return ft.get_peft_model(base).eval()

    return build


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("train_on", ["assistant", "all"])
def test_loss_on_packed_rows_equals_the_loss_on_the_same_examples_unpacked(attn, train_on, tiny_model):
    items = examples(train_on)
    rows = pack(items, 512)
    assert len(rows) < len(items) / 2  # several examples share each row
    optim = dict(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), optimizer="adamw", scheduler="constant")
    module = LoRAModule(tiny_model(attn), METHODS.get("sft"), SftOptions(), **optim, warmup_steps=0, min_lr_ratio=0.0)
    with torch.no_grad():
        (unpacked, sums_unpacked), (packed, sums_packed) = module(pad(items, 0)), module(pad(rows, 0))
    n_unpacked, n_packed = sums_unpacked["units"], sums_packed["units"]
    assert int(n_packed) == int(n_unpacked)  # the same supervised tokens
    unpacked, packed = float(unpacked / n_unpacked), float(packed / n_packed)
    assert abs(packed - unpacked) < 1e-5, (packed, unpacked)


def test_packed_rows_hold_every_example_once_with_restarting_positions():
    items = examples()
    rows = pack(items, 300)
    assert all(len(r["input_ids"]) <= 300 for r in rows)
    total = sum(len(x["input_ids"]) for x in items)
    assert len(rows) <= -(-total // 300) + 2  # best-fit decreasing is close to the lower bound
    starts = [i for r in rows for i, p in enumerate(r["position_ids"]) if p == 0]
    assert len(starts) == len(items)
    unpacked = sorted(tuple(x["input_ids"]) for x in items)
    repacked = []
    for r in rows:
        bounds = [i for i, p in enumerate(r["position_ids"]) if p == 0] + [len(r["position_ids"])]
        repacked += [tuple(r["input_ids"][a:b]) for a, b in zip(bounds, bounds[1:])]
        assert all(r["labels"][a] == -100 for a in bounds[:-1])  # no example predicts the next one's start
    assert sorted(repacked) == unpacked


def test_collated_packed_batch_pads_with_a_sequence_of_its_own():
    batch = pad(
        [
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 1, 0]},
            {"input_ids": [4], "labels": [-100], "position_ids": [0]},
        ],
        pad_id=7,
    )
    assert batch["position_ids"].tolist() == [[0, 1, 0], [0, 0, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"][1].tolist() == [4, 7, 7] and batch["labels"][1].tolist() == [-100, -100, -100]


class IgnoresPositions(torch.nn.Module):
    """A model whose attention cannot keep packed examples apart: it drops position ids."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids)


def test_packing_is_refused_on_a_model_whose_attention_leaks(tiny_model, cache_dir):
    model = tiny_model("sdpa")
    assert attention_stays_inside(model)[0]
    assert not attention_stays_inside(IgnoresPositions(model))[0]
    ft = FineTune(compose(["model=tiny", f"cache_dir={cache_dir}", "data.packing=true"]))
    with pytest.raises(
        FtlabError, match="data.packing=true: .* lets packed examples attend to each other.*set data.packing=false"
    ):
        ft.check_packing(IgnoresPositions(model), "sdpa")


def test_packed_training_run(workdir, tiny, capsys):
    stats = FineTune(compose(tiny + ["data.packing=true", "data.max_seq_len=400"])).run()
    out = capsys.readouterr().out
    assert "packing: attention stays inside each example" in out and stats["steps"] == 4
    assert stats["tokens_per_row"] > 2 * stats["tokens_per_example"]
    unpacked = FineTune(compose(tiny + ["data.max_seq_len=400"])).run()
    assert stats["padding_fraction"] < unpacked["padding_fraction"]


def test_length_grouping_cuts_padding_and_keeps_the_epoch_a_permutation():
    lengths = [(i * 37) % 200 + 5 for i in range(403)]
    grouped = epoch_order(len(lengths), seed=3, epoch=0, lengths=lengths, batch_size=8)
    shuffled = epoch_order(len(lengths), seed=3, epoch=0)
    assert sorted(grouped) == list(range(len(lengths)))
    assert grouped == epoch_order(len(lengths), seed=3, epoch=0, lengths=lengths, batch_size=8)
    assert grouped != epoch_order(len(lengths), seed=3, epoch=1, lengths=lengths, batch_size=8)
    assert lengths[grouped[0]] == max(lengths)  # the biggest batch first: out-of-memory shows at step 1
    assert grouped[-3:] == grouped[400:]  # the short last batch stays last
    rows = [(n,) for n in lengths]  # one batch row each
    assert padding_fraction(rows, grouped, 8) < padding_fraction(rows, shuffled, 8) / 3
