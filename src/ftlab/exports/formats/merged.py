"""format=merged: a plain transformers model folder (config.json, model.safetensors, generation_config.json, the
tokenizer with the chat template training used) that `AutoModelForCausalLM.from_pretrained(DIR)` loads with no
PEFT, no ftlab and no quantization. Checked by reloading it with plain transformers."""

from pathlib import Path
from typing import List

import torch
from transformers import AutoConfig

from ftlab.exports import EXPORTS, ExportFormat, Job, Written
from ftlab.exports.probes import measure, refuse_beyond_tolerance, reloaded_logits
from ftlab.model.load import TORCH_DTYPES


@EXPORTS.register
class Merged(ExportFormat):
    name = "merged"
    folder = "merged"
    options = ("dtype",)

    def describe(self, job: Job, target: Path) -> str:
        return f"{_name(saved_dtype(job.source, job.options.dtype))} weights into {target}"

    def write(self, job: Job, folder: Path) -> Written:
        dtype = saved_dtype(job.source, job.options.dtype)
        job.model.to(dtype).save_pretrained(folder)
        job.tokenizer.padding_side = "left"  # what batched generation with the exported model needs
        job.tokenizer.save_pretrained(folder)
        check = measure(job.reference, reloaded_logits(folder, job.batch), _name(dtype)) if job.options.check else None
        if check:
            refuse_beyond_tolerance(check, "the merged model", "Try dtype=float32")
        return Written(_name(dtype), check=check, checked="reloaded with AutoModelForCausalLM")

    def next_steps(self, job: Job, target: Path) -> List[str]:
        return [f'ftlab: merged model in {target}; load it with AutoModelForCausalLM.from_pretrained("{target}")']


def saved_dtype(source: str, dtype: str) -> torch.dtype:
    """dtype=auto: what the base checkpoint's config.json names, else float32."""
    if dtype != "auto":
        return TORCH_DTYPES[dtype]
    named = str(getattr(AutoConfig.from_pretrained(source), "dtype", None) or "").replace("torch.", "")
    return TORCH_DTYPES.get(named, torch.float32)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
