"""format=gguf-adapter: adapter.gguf, the adapter alone in llama.cpp's LoRA layout, for use on the base model's
GGUF (`llama-cli -m BASE.gguf --lora adapter.gguf`, Ollama's ADAPTER). Checked by adding the file to the base as
llama.cpp adds it (gguf_lora.apply) and comparing the logits."""

from pathlib import Path
from typing import List

from ftlab.exports import EXPORTS, ExportFormat, Job, Written, gguf_lora, gguf_model
from ftlab.exports.probes import logits, measure, refuse_beyond_tolerance


@EXPORTS.register
class GgufAdapter(ExportFormat):
    name = "gguf-adapter"
    folder = "gguf-adapter"
    needs = "base"
    options = ("gguf",)
    doing = "Writing the adapter"

    def refusals(self, adapter_config: dict) -> List[str]:
        return gguf_lora.refusals(adapter_config)

    def check_model(self, config) -> None:
        gguf_model.check_supported(config)

    def describe(self, job: Job, target: Path) -> str:
        return f"{job.options.gguf.dtype} tensors into {target}"

    def write(self, job: Job, folder: Path) -> Written:
        dtype, base = job.options.gguf.dtype, job.model
        written = gguf_lora.write(
            folder / "adapter.gguf", job.run.adapter, base.config, dtype, Path(job.run.label).name
        )
        check = None
        if job.options.check:
            gguf_lora.apply(folder / "adapter.gguf", base)
            check = measure(job.reference, logits(base.eval(), job.batch), dtype)
            refuse_beyond_tolerance(check, "the base with adapter.gguf added", "Try gguf.dtype=f32")
        numbers = dict(bytes=(folder / "adapter.gguf").stat().st_size, **written)
        return Written(dtype, numbers, check, "the base plus adapter.gguf, added as llama.cpp adds it")

    def next_steps(self, job: Job, target: Path) -> List[str]:
        return [
            f"ftlab: GGUF adapter in {target / 'adapter.gguf'}",
            f"use it on the base model's GGUF: llama-cli -m BASE.gguf --lora {target / 'adapter.gguf'} -cnv",
        ]
