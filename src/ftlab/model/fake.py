"""A model with no data: built from its config on the meta device, quantized there as bitsandbytes quantizes it,
then moved onto fake tensors (shapes and dtypes, no storage behind them) for ftlab.plan to trace a step of."""

from typing import Dict

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ftlab.model import load


def quantize_4bit(model, quant_cfg, precision: str, sharded: bool) -> None:
    """The linear layers transformers' bitsandbytes quantizer picks, as 4-bit layers holding what bitsandbytes'
    quantize_4bit makes of their weights: the packed weights and the quantization constants."""
    import bitsandbytes as bnb
    from transformers.quantizers import AutoHfQuantizer

    qc = load.quantization_config(quant_cfg, precision, sharded)
    quantizer = AutoHfQuantizer.from_config(qc, pre_quantized=False)
    quantizer.preprocess_model(model, device_map={"": "cpu"}, dtype=qc.bnb_4bit_compute_dtype)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            shape = (module.out_features, module.in_features)
            weight = torch.empty(shape, dtype=qc.bnb_4bit_compute_dtype, device="meta")
            packed, state = bnb.functional.quantize_4bit(
                weight,
                blocksize=module.weight.blocksize,
                compress_statistics=qc.bnb_4bit_use_double_quant,
                quant_type=qc.bnb_4bit_quant_type,
                quant_storage=qc.bnb_4bit_quant_storage,
            )
            module.weight = bnb.nn.Params4bit(
                packed,
                requires_grad=False,
                quant_state=state,
                blocksize=module.weight.blocksize,
                compress_statistics=qc.bnb_4bit_use_double_quant,
                quant_type=qc.bnb_4bit_quant_type,
                quant_storage=qc.bnb_4bit_quant_storage,
                bnb_quantized=True,
                module=module,
            )
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer


def state_parts(state):
    """A 4-bit weight's QuantState, then with double quantization the state of its quantization constants."""
    while state is not None:
        yield state
        state = getattr(state, "state2", None)


_BNB_ATTRIBUTES = ("quant_state", "quant_type", "compress_statistics", "blocksize", "bnb_quantized", "quant_storage")


def to_fake(model, fake: FakeTensorMode) -> None:
    """Every parameter and buffer of the meta model as a fake CPU tensor, in place (tied weights stay tied).

    A 4-bit weight becomes a plain parameter carrying Params4bit's attributes: Params4bit cannot wrap a fake tensor
    (a tensor subclass itself), and the 4-bit layer reads only its data and those attributes."""

    def like(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cpu")

    done: Dict[int, torch.nn.Parameter] = {}
    with fake:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is None:
                    continue
                if id(p) not in done:
                    new = torch.nn.Parameter(like(p), requires_grad=p.requires_grad)
                    state = getattr(p, "quant_state", None)
                    if state is not None:
                        for part in state_parts(state):
                            for key, value in list(vars(part).items()):
                                if isinstance(value, torch.Tensor):
                                    setattr(part, key, like(value))
                        for attribute in _BNB_ATTRIBUTES:
                            setattr(new, attribute, getattr(p, attribute))
                    done[id(p)] = new
                module._parameters[name] = done[id(p)]
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = like(b)


def largest_layer(model) -> int:
    layers = load.decoder_layer_classes(model)
    sizes = [
        sum(p.numel() * p.element_size() for p in m.parameters() if not p.requires_grad)
        for m in model.modules()
        if type(m) in layers
    ]
    return max(sizes, default=0)
