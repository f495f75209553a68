"""`python -m ftlab.export run=RUN [format=merged|gguf|gguf-adapter] [output=DIR]`: a finished run for serving,
in a format of exports/formats/ (merged: a transformers model folder; gguf: model.gguf and an Ollama Modelfile;
gguf-adapter: the adapter alone for llama.cpp).

Every format is proven before it appears: it is written under a temporary name, read back (the merged folder
and model.gguf by plain transformers, the adapter GGUF added to the base as llama.cpp adds it), and its logits
compared with the adapter model's on chat-formatted probes, within a tolerance set by the stored dtype; a GGUF's
rebuilt tokenizer must also give the probes the same token ids. Beyond that it is an error and nothing is
written; export.json records the numbers.

A 4-bit or 8-bit base is dequantized first, and the adapter merged into those dequantized weights: that is the
base the adapter was trained against, and merging into the quantized weights would round the update away.
"""

from dataclasses import is_dataclass
from pathlib import Path
from typing import List, Optional

from ftlab.config.overrides import run_command
from ftlab.config.schema import ExportCommand
from ftlab.exports import EXPORTS, ExportFormat, Job
from ftlab.exports.vllm import command as vllm_command
from ftlab.exports.vllm import problems as vllm_problems
from ftlab.exports.vllm import read_adapter_config
from ftlab.use import runs
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.errors import ConfigError, FtlabError
from ftlab.utils.files import atomic, new_output, write_json

# the export formats, torch, transformers and the recipe load inside export(), once the command line is known to be
# good: a mistyped option is refused at once, not after seconds of imports


def output_dir(run: runs.Run, options: ExportCommand, fmt: ExportFormat) -> Path:
    if options.output is None and run.run_dir is None:
        raise FtlabError(f"run={run.label} is not a local run dir, so there is no default output; pass output=DIR")
    default = run.run_dir / fmt.folder if run.run_dir is not None else None
    return new_output(Path(options.output).expanduser() if options.output is not None else default, "an export")


def refuse_unread_options(options: ExportCommand, fmt: ExportFormat) -> None:
    """An option set away from its default that the chosen format does not read: one line naming who reads it."""
    defaults = ExportCommand(run=options.run)
    for name in {o for f in EXPORTS for o in f.options}:
        if name not in fmt.options and getattr(options, name) != getattr(defaults, name):
            readers = "|".join(f.name for f in EXPORTS if name in f.options)
            own = ", ".join(f"{o}.*" if is_dataclass(getattr(defaults, o)) else f"{o}=" for o in fmt.options)
            raise ConfigError(f"{name}= sets format={readers}'s files; for format={fmt.name} set {own or 'neither'}")


def export(options: ExportCommand, overrides: List[str], recipe_cls=None) -> None:
    """`recipe_cls`: FineTune, or the subclass whose stages trained the run."""
    from ftlab.exports.probes import logits, probe_batch
    from ftlab.train.recipe import FineTune
    from ftlab.train.trained import Trained

    setup_logging()
    fmt = EXPORTS.get(options.format)
    refuse_unread_options(options, fmt)
    stages = Stages(("Finding the run", "Loading the adapter model", fmt.doing, "Saving and checking"))
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
    refused = fmt.refusals(read_adapter_config(run.adapter))
    if refused:  # from the adapter's config alone, before any model is loaded
        raise FtlabError(refused[0])
    target = output_dir(run, options, fmt)
    stages.start("Loading the adapter model", f"{run.cfg.model.name} + {run.adapter}")
    trained = Trained(run, recipe_cls or FineTune)
    adapter_model = trained.model()
    model_type = adapter_model.config.model_type
    fmt.check_model(adapter_model.config)  # refused before the merge and the writing, not after
    batch = probe_batch(trained.tokenizer)
    reference = logits(adapter_model, batch)
    source = trained.stages.model_source()  # resolved once: for a Hub id it asks the Hub for the config
    stages.start(fmt.doing, "adapter into the base weights" if fmt.needs == "merged" else f"{run.adapter}")
    model = merged(run, trained, adapter_model) if fmt.needs == "merged" else base(run, trained, adapter_model)
    del adapter_model  # merged in place, or replaced by a reloaded base: nothing else reads it
    job = Job(run, options, trained.tokenizer, model, reference, batch, source)
    stages.start("Saving and checking", fmt.describe(job, target))
    with atomic(target, directory=True) as tmp:  # the folder appears whole, or not at all
        written = fmt.write(job, tmp)
        write_json(tmp / "export.json", report(run, written.dtype, check=written.check, **written.numbers))
    stages.finish()
    if written.check:
        say_check(written.check, written.checked)
    for note in written.notes:
        info(note)
    for line in fmt.next_steps(job, target) + [serve_unmerged(run, model_type)]:
        log.info(line)


def merged(run: runs.Run, trained, adapter_model):
    """The adapter merged into its base. A 4-bit or 8-bit base is dequantized first, and the adapter merged into
    those dequantized weights: that is the base the adapter was trained against, and merging into the quantized
    weights would round the update away."""
    from ftlab.model import adapter

    if run.cfg.quant.bits is None:
        model = adapter_model.merge_and_unload()  # the base is in float32 already: merge in place
    else:
        info(
            f"the base was loaded {run.cfg.quant.bits}-bit as in training; dequantizing it to float32 before "
            "merging (the merged model is the dequantized base plus the adapter)"
        )
        model = adapter.merge_dequantized(trained.base(), run.adapter)
    model.config.use_cache = True  # training switched it off; a model for inference wants it
    return model


def base(run: runs.Run, trained, adapter_model):
    """The base the adapter was trained on, in float32, with no LoRA layers: what an adapter file is added to."""
    from ftlab.model import adapter

    if run.cfg.quant.bits is None:
        return adapter_model.unload()
    return adapter.dequantized(trained.base())


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
    config = read_adapter_config(run.adapter)
    refused = vllm_problems(config, model_type)
    if refused:
        return "vLLM would not serve the adapter unmerged: " + "; ".join(refused) + " (the merged model serves as is)"
    name = Path(run.label).name
    return f"serve the adapter unmerged with vLLM: {vllm_command(run.cfg.model.name, name, str(run.adapter), config)}"


def main(argv: Optional[List[str]] = None) -> None:
    run_command(argv, ExportCommand, "ftlab.export", "write a run's model for serving, checked first", export)


if __name__ == "__main__":
    main()
