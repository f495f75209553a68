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
    ft = FineTune(compose(over + ["trainer=gpu", f"quant={quant}", "trainer.precision=bf16-mixed"]))
    stats = ft.run()
    assert stats["steps"] == 4 and torch.isfinite(torch.tensor(stats["val_loss_after"]))
    assert next(p for p in ft.model.parameters() if p.requires_grad).device.type == "cuda"
