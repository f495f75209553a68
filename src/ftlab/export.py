"""`python -m ftlab.export run=RUN [output=DIR] [dtype=auto]`: the base model with the adapter merged in.

The result is a plain transformers model folder (config.json, model.safetensors, generation_config.json, the
tokenizer with the chat template training used) that `AutoModelForCausalLM.from_pretrained(DIR)` loads with no
PEFT, no ftlab and no quantization. Before the folder appears (it is written under a temporary name and moved
into place whole), the saved model is reloaded that way and its logits compared with the adapter model's on
a few chat-formatted inputs; a mismatch beyond float tolerance is an error, and export.json records the numbers.

A 4-bit or 8-bit base is dequantized first, and the adapter merged into those dequantized weights: that is the
base the adapter was trained against, and merging into the quantized weights would round the update away.
"""

from pathlib import Path
from typing import List, Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ftlab.config.overrides import run_command
from ftlab.config.schema import ExportCommand
from ftlab.data import chat
from ftlab.data.batching import Collator
from ftlab.model import adapter, vllm
from ftlab.model.load import TORCH_DTYPES
from ftlab.train.recipe import FineTune
from ftlab.use import runs
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.errors import FtlabError
from ftlab.utils.files import atomic, new_output, write_json

# float error allowed between the reloaded merged model and the adapter model, relative to the logits' scale
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}
PROBES = [
    [
        {"role": "user", "content": "What is a low-rank adapter?"},
        {"role": "assistant", "content": "A small trainable update added to frozen weights."},
    ],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven."},
    ],
]


def output_dir(run: runs.Run, output: Optional[str]) -> Path:
    if output is None and run.run_dir is None:
        raise FtlabError(f"run={run.label} is not a local run dir, so there is no default output; pass output=DIR")
    return new_output(Path(output).expanduser() if output is not None else run.run_dir / "merged", "an export")


def probe_batch(tokenizer) -> dict:
    """A few chat-formatted conversations, tokenized as in training, padded into one batch."""
    examples = [chat.tokenize_conversation(tokenizer, m, 512, "export probe", "all") for m in PROBES]
    return Collator(tokenizer.pad_token_id)(examples)


def logits(model, batch: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    return out.logits.float().cpu()[batch["attention_mask"].bool()]  # real tokens only


def saved_dtype(source: str, dtype: str) -> torch.dtype:
    """dtype=auto: what the base checkpoint's config.json names, else float32."""
    if dtype != "auto":
        return TORCH_DTYPES[dtype]
    named = str(getattr(AutoConfig.from_pretrained(source), "dtype", None) or "").replace("torch.", "")
    return TORCH_DTYPES.get(named, torch.float32)


def compare(reference: torch.Tensor, folder: Path, batch: dict, dtype: torch.dtype) -> dict:
    """Reload `folder` with plain transformers and measure how far its logits are from `reference`."""
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    got = logits(reloaded, batch)
    diff = (got - reference).abs()
    scale = float(reference.abs().max())
    name = str(dtype).replace("torch.", "")
    same_top = (got.argmax(-1) == reference.argmax(-1)).float().mean()
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_scale": scale,
        "tolerance": TOLERANCE[name] * max(1.0, scale),
        "same_argmax": float(same_top),
        "tokens": int(reference.shape[0]),
    }


def export(options: ExportCommand, overrides: List[str], recipe_cls=FineTune) -> None:
    setup_logging()
    stages = Stages(("Finding the run", "Loading the adapter model", "Merging", "Saving and checking"))
    stages.start("Finding the run", options.run)
    # float32 throughout, so the comparison measures the merge and the saved dtype, not the training precision
    run = runs.locate(
        options.run,
        list(overrides) + ["trainer.precision=32-true", "model.dtype=float32", "quant.compute_dtype=float32"],
    )
    if run.adapter is None:
        raise FtlabError(
            f"run={options.run} has no adapter (no adapter_config.json); export merges a run's adapter "
            "into its base: give a finished run dir"
        )
    target = output_dir(run, options.output)
    stages.start("Loading the adapter model", f"{run.cfg.model.name} + {run.adapter}")
    recipe = recipe_cls(run.cfg)
    tokenizer = recipe.load_trained_tokenizer(run.adapter)
    adapter_model = recipe.load_trained(run.adapter)
    batch = probe_batch(tokenizer)
    reference = logits(adapter_model, batch)
    source_dir = recipe.model_source()  # resolved once: for a Hub id it asks the Hub for the config
    stages.start("Merging", "adapter into the base weights")
    if run.cfg.quant.bits is None:
        merged = adapter_model.merge_and_unload()  # the base is in float32 already: merge in place
    else:
        del adapter_model  # merging into quantized weights would round the update away; free it, reload the base
        recipe.model = None
        info(
            f"the base was loaded {run.cfg.quant.bits}-bit as in training; dequantizing it to float32 before "
            "merging (the merged model is the dequantized base plus the adapter)"
        )
        merged = adapter.merge_dequantized(recipe.load_base_model(source_dir), run.adapter)
    merged.config.use_cache = True  # training switched it off; a model for inference wants it
    dtype = saved_dtype(source_dir, options.dtype)
    stages.start("Saving and checking", f"{str(dtype).replace('torch.', '')} weights into {target}")
    with atomic(target, directory=True) as tmp:  # the folder appears whole, or not at all
        merged.to(dtype).save_pretrained(tmp)
        tokenizer.padding_side = "left"  # what batched generation with the exported model needs
        tokenizer.save_pretrained(tmp)
        check = compare(reference, tmp, batch, dtype) if options.check else None
        if check and check["max_abs_diff"] > check["tolerance"]:
            raise FtlabError(
                f"the merged model's logits differ from the adapter model's by up to "
                f"{check['max_abs_diff']:.3g} (tolerance {check['tolerance']:.3g}); nothing was "
                "written. Try dtype=float32"
            )
        write_json(
            tmp / "export.json",
            {
                "run": run.label,
                "base_model": run.cfg.model.name,
                "adapter": str(run.adapter),
                "dtype": str(dtype).replace("torch.", ""),
                "dequantized_from_bits": run.cfg.quant.bits,
                "check": check,
            },
        )
    if check:
        info(
            f"reloaded with AutoModelForCausalLM: logits within {check['max_abs_diff']:.2g} of the adapter model's "
            f"(tolerance {check['tolerance']:.2g}) on {check['tokens']} tokens; same top token on "
            f"{check['same_argmax']:.0%}"
        )
    stages.finish()
    log.info(f'ftlab: merged model in {target}; load it with AutoModelForCausalLM.from_pretrained("{target}")')
    log.info(serve_unmerged(run, merged.config.model_type))


def serve_unmerged(run: runs.Run, model_type: str) -> str:
    """How vLLM serves the run's adapter as it is (no merge), or what in the adapter it would refuse."""
    config = vllm.read_adapter_config(run.adapter)
    refused = vllm.problems(config, model_type)
    if refused:
        return "vLLM would not serve the adapter unmerged: " + "; ".join(refused) + " (the merged model serves as is)"
    name = Path(run.label).name
    return f"serve the adapter unmerged with vLLM: {vllm.command(run.cfg.model.name, name, str(run.adapter), config)}"


def main(argv: Optional[List[str]] = None) -> None:
    run_command(argv, ExportCommand, "ftlab.export", "merge a run's adapter into its base model", export)


if __name__ == "__main__":
    main()
