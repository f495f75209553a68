"""`python -m ftlab.export run=RUN [format=merged|gguf|gguf-adapter] [output=DIR]`: a finished run for serving.

format=merged: a plain transformers model folder (config.json, model.safetensors, generation_config.json, the
tokenizer with the chat template training used) that `AutoModelForCausalLM.from_pretrained(DIR)` loads with no
PEFT, no ftlab and no quantization.
format=gguf: model.gguf (weights, tokenizer, chat template) for llama.cpp and Ollama, a Modelfile for
`ollama create`, and export.json.
format=gguf-adapter: adapter.gguf, the adapter alone in llama.cpp's LoRA layout, for use on the base's GGUF.

Every format is proven before it appears: it is written under a temporary name, read back (the merged folder
and model.gguf by plain transformers, the adapter GGUF added to the base as llama.cpp adds it), and its logits
compared with the adapter model's on chat-formatted probes, within a tolerance set by the stored dtype; a GGUF's
rebuilt tokenizer must also give the probes the same token ids. Beyond that it is an error and nothing is
written; export.json records the numbers.

A 4-bit or 8-bit base is dequantized first, and the adapter merged into those dequantized weights: that is the
base the adapter was trained against, and merging into the quantized weights would round the update away.
"""

from pathlib import Path
from typing import List, Optional

import torch
from transformers import AutoConfig

from ftlab.config.overrides import run_command
from ftlab.config.schema import ExportCommand
from ftlab.data.chat import end_of_turn
from ftlab.model import adapter
from ftlab.model.load import TORCH_DTYPES
from ftlab.serve import gguf_adapter, gguf_model, model_name, ollama, vllm
from ftlab.serve.probes import logits, measure, probe_batch, reloaded_logits, tokenizer_problems
from ftlab.train.recipe import FineTune
from ftlab.use import runs
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.errors import ConfigError, FtlabError
from ftlab.utils.files import atomic, new_output, write_json, write_text

__all__ = ["export", "logits", "main", "probe_batch"]
FOLDERS = {"merged": "merged", "gguf": "gguf", "gguf-adapter": "gguf-adapter"}


def output_dir(run: runs.Run, options: ExportCommand) -> Path:
    if options.output is None and run.run_dir is None:
        raise FtlabError(f"run={run.label} is not a local run dir, so there is no default output; pass output=DIR")
    default = run.run_dir / FOLDERS[options.format] if run.run_dir is not None else None
    return new_output(Path(options.output).expanduser() if options.output is not None else default, "an export")


def saved_dtype(source: str, dtype: str) -> torch.dtype:
    """dtype=auto: what the base checkpoint's config.json names, else float32."""
    if dtype != "auto":
        return TORCH_DTYPES[dtype]
    named = str(getattr(AutoConfig.from_pretrained(source), "dtype", None) or "").replace("torch.", "")
    return TORCH_DTYPES.get(named, torch.float32)


def refuse_beyond_tolerance(check: dict, what: str, fix: str) -> None:
    if check["max_abs_diff"] > check["tolerance"]:
        raise FtlabError(
            f"{what}'s logits differ from the adapter model's by up to {check['max_abs_diff']:.3g} (tolerance "
            f"{check['tolerance']:.3g}); nothing was written. {fix}"
        )


def export(options: ExportCommand, overrides: List[str], recipe_cls=FineTune) -> None:
    setup_logging()
    if options.format != "merged" and options.dtype != "auto":
        raise ConfigError(f"dtype= sets format=merged's weights; for format={options.format} set gguf.dtype")
    last = {"merged": "Merging", "gguf": "Merging", "gguf-adapter": "Writing the adapter"}[options.format]
    stages = Stages(("Finding the run", "Loading the adapter model", last, "Saving and checking"))
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
    refused = gguf_adapter.refusals(vllm.read_adapter_config(run.adapter)) if options.format == "gguf-adapter" else []
    if refused:  # from the adapter's config alone, before any model is loaded
        raise FtlabError(refused[0])
    target = output_dir(run, options)
    stages.start("Loading the adapter model", f"{run.cfg.model.name} + {run.adapter}")
    recipe = recipe_cls(run.cfg)
    tokenizer = recipe.load_trained_tokenizer(run.adapter)
    adapter_model = recipe.load_trained(run.adapter)
    model_type = adapter_model.config.model_type
    if options.format != "merged":  # refused before the merge and the writing, not after
        gguf_model.check_supported(adapter_model.config)
    batch = probe_batch(tokenizer)
    reference = logits(adapter_model, batch)
    source_dir = recipe.model_source()  # resolved once: for a Hub id it asks the Hub for the config
    if options.format == "gguf-adapter":
        stages.start(last, f"{run.adapter} in llama.cpp's LoRA layout")
        base = base_weights(run, recipe, adapter_model, source_dir)
        stages.start("Saving and checking", f"{options.gguf.dtype} tensors into {target}")
        done = save_gguf_adapter(options, run, base, reference, batch, target)
    else:
        stages.start("Merging", "adapter into the base weights")
        merged = merge(run, recipe, adapter_model, source_dir)
        if options.format == "merged":
            dtype = saved_dtype(source_dir, options.dtype)
            stages.start("Saving and checking", f"{str(dtype).replace('torch.', '')} weights into {target}")
            done = save_merged(options, run, merged, tokenizer, reference, batch, target, dtype)
        else:
            stages.start("Saving and checking", f"{options.gguf.dtype} GGUF into {target}")
            done = save_gguf(options, run, merged, tokenizer, reference, batch, target)
    stages.finish()
    for line in done + [serve_unmerged(run, model_type)]:
        log.info(line)


def merge(run: runs.Run, recipe, adapter_model, source_dir: str):
    if run.cfg.quant.bits is None:
        merged = adapter_model.merge_and_unload()  # the base is in float32 already: merge in place
    else:
        recipe.model = None  # merging into quantized weights would round the update away: reload the base
        info(
            f"the base was loaded {run.cfg.quant.bits}-bit as in training; dequantizing it to float32 before "
            "merging (the merged model is the dequantized base plus the adapter)"
        )
        merged = adapter.merge_dequantized(recipe.load_base_model(source_dir), run.adapter)
    merged.config.use_cache = True  # training switched it off; a model for inference wants it
    return merged


def base_weights(run: runs.Run, recipe, adapter_model, source_dir: str):
    """The base the adapter was trained on, in float32, with no LoRA layers: what the adapter GGUF is added to."""
    if run.cfg.quant.bits is None:
        return adapter_model.unload()
    recipe.model = None
    return adapter.dequantized(recipe.load_base_model(source_dir))


def save_merged(options, run, merged, tokenizer, reference, batch, target: Path, dtype: torch.dtype) -> List[str]:
    name = str(dtype).replace("torch.", "")
    with atomic(target, directory=True) as tmp:  # the folder appears whole, or not at all
        merged.to(dtype).save_pretrained(tmp)
        tokenizer.padding_side = "left"  # what batched generation with the exported model needs
        tokenizer.save_pretrained(tmp)
        check = measure(reference, reloaded_logits(tmp, batch), name) if options.check else None
        if check:
            refuse_beyond_tolerance(check, "the merged model", "Try dtype=float32")
        write_json(tmp / "export.json", report(run, name, check=check))
    if check:
        say_check(check, "reloaded with AutoModelForCausalLM")
    return [f'ftlab: merged model in {target}; load it with AutoModelForCausalLM.from_pretrained("{target}")']


def save_gguf(options, run, merged, tokenizer, reference, batch, target: Path) -> List[str]:
    dtype, name = options.gguf.dtype, model_name(Path(run.label).name.lower()) or "ftlab"
    marker = end_of_turn(tokenizer)
    with atomic(target, directory=True) as tmp:
        written = gguf_model.write(tmp / "model.gguf", merged, tokenizer, dtype, name, marker, run.cfg.generation)
        check, tokens = None, None
        if options.check:
            rope = gguf_model.rope_difference(tmp / "model.gguf", merged.config)
            if rope is not None and rope > 1e-5:
                raise FtlabError(f"model.gguf's rope_freqs differ from transformers' Llama 3 rope by {rope:.2g}")
            # transformers' GGUF reader drops rope scaling: the reload takes it from the config, proven just above
            config = merged.config if rope is not None else None
            got = reloaded_logits(tmp, batch, gguf_file="model.gguf", config=config)
            check = {**measure(reference, got, dtype), **({"rope_freqs_difference": rope} if rope is not None else {})}
            refuse_beyond_tolerance(check, "model.gguf", "Try gguf.dtype=f16 or f32")
            tokens = tokenizer_problems(tmp, "model.gguf", tokenizer)
            if tokens:
                raise FtlabError(f"model.gguf's tokenizer, rebuilt by transformers: {tokens[0]}; nothing was written")
        template = ollama.modelfile(
            "model.gguf", tokenizer.chat_template, run.cfg.generation, tokenizer.bos_token, tokenizer.eos_token
        )
        write_text(tmp / "Modelfile", template)
        numbers = dict(written, bytes=(tmp / "model.gguf").stat().st_size, tokenizer_ids_equal=tokens == [] or None)
        write_json(tmp / "export.json", report(run, dtype, check=check, **numbers))
    if check:
        say_check(check, "model.gguf reloaded with AutoModelForCausalLM")
        info("model.gguf's tokenizer, rebuilt by transformers, gives the probes the trained tokenizer's ids")
    size = (target / "model.gguf").stat().st_size / 2**20
    return [
        f"ftlab: GGUF model in {target / 'model.gguf'} ({size:.1f} MiB)",
        f"run it with Ollama: cd {target} && ollama create {name} -f Modelfile && ollama run {name}",
        f"or with llama.cpp: llama-cli -m {target / 'model.gguf'} -cnv",
    ]


def save_gguf_adapter(options, run, base, reference, batch, target: Path) -> List[str]:
    dtype, name = options.gguf.dtype, Path(run.label).name
    with atomic(target, directory=True) as tmp:
        written = gguf_adapter.write(tmp / "adapter.gguf", run.adapter, base.config, dtype, name)
        check = None
        if options.check:
            gguf_adapter.apply(tmp / "adapter.gguf", base)
            check = measure(reference, logits(base.eval(), batch), dtype)
            refuse_beyond_tolerance(check, "the base with adapter.gguf added", "Try gguf.dtype=f32")
        write_json(
            tmp / "export.json", report(run, dtype, check=check, bytes=(tmp / "adapter.gguf").stat().st_size, **written)
        )
    if check:
        say_check(check, "the base plus adapter.gguf, added as llama.cpp adds it")
    return [
        f"ftlab: GGUF adapter in {target / 'adapter.gguf'}",
        f"use it on the base model's GGUF: llama-cli -m BASE.gguf --lora {target / 'adapter.gguf'} -cnv",
    ]


def say_check(check: dict, what: str) -> None:
    info(
        f"{what}: logits within {check['max_abs_diff']:.2g} of the adapter model's (tolerance "
        f"{check['tolerance']:.2g}) on {check['tokens']} tokens; same top token on {check['same_argmax']:.0%}"
    )


def report(run: runs.Run, dtype: str, **numbers) -> dict:
    """export.json: where the export came from, its dtype, and what was written and measured."""
    source = {"run": run.label, "base_model": run.cfg.model.name, "adapter": str(run.adapter)}
    return {**source, "dtype": dtype, "dequantized_from_bits": run.cfg.quant.bits, **numbers}


def serve_unmerged(run: runs.Run, model_type: str) -> str:
    """How vLLM serves the run's adapter as it is (no merge), or what in the adapter it would refuse."""
    config = vllm.read_adapter_config(run.adapter)
    refused = vllm.problems(config, model_type)
    if refused:
        return "vLLM would not serve the adapter unmerged: " + "; ".join(refused) + " (the merged model serves as is)"
    name = Path(run.label).name
    return f"serve the adapter unmerged with vLLM: {vllm.command(run.cfg.model.name, name, str(run.adapter), config)}"


def main(argv: Optional[List[str]] = None) -> None:
    run_command(argv, ExportCommand, "ftlab.export", "write a run's model for serving, checked first", export)


if __name__ == "__main__":
    main()
