"""format=gguf: model.gguf (weights, tokenizer, chat template) for llama.cpp and Ollama, a Modelfile for
`ollama create`. Checked by reloading the file with plain transformers: its logits on the probes, and the token
ids its rebuilt tokenizer gives them (with Llama 3.1's rope scaling, the file's rope_freqs against transformers'
own rope)."""

from pathlib import Path
from typing import List

from ftlab.data.chat import end_of_turn
from ftlab.exports import EXPORTS, ExportFormat, Job, Written, gguf_model, model_name, ollama
from ftlab.exports.probes import measure, refuse_beyond_tolerance, reloaded_logits, tokenizer_problems
from ftlab.utils.errors import FtlabError


@EXPORTS.register
class Gguf(ExportFormat):
    name = "gguf"
    folder = "gguf"
    options = ("gguf",)

    def check_model(self, config) -> None:
        gguf_model.check_supported(config)

    def describe(self, job: Job, target: Path) -> str:
        return f"{job.options.gguf.dtype} GGUF into {target}"

    def write(self, job: Job, folder: Path) -> Written:
        dtype, name, tokenizer = job.options.gguf.dtype, served_name(job), job.tokenizer
        marker = end_of_turn(tokenizer)
        generation = job.run.cfg.generation
        written = gguf_model.write(folder / "model.gguf", job.model, tokenizer, dtype, name, marker, generation)
        check, tokens = None, None
        if job.options.check:
            rope = gguf_model.rope_difference(folder / "model.gguf", job.model.config)
            if rope is not None and rope > 1e-5:
                raise FtlabError(f"model.gguf's rope_freqs differ from transformers' Llama 3 rope by {rope:.2g}")
            # transformers' GGUF reader drops rope scaling: the reload takes it from the config, proven just above
            config = job.model.config if rope is not None else None
            got = reloaded_logits(folder, job.batch, gguf_file="model.gguf", config=config)
            check = {
                **measure(job.reference, got, dtype),
                **({"rope_freqs_difference": rope} if rope is not None else {}),
            }
            refuse_beyond_tolerance(check, "model.gguf", "Try gguf.dtype=f16 or f32")
            tokens = tokenizer_problems(folder, "model.gguf", tokenizer)
            if tokens:
                raise FtlabError(f"model.gguf's tokenizer, rebuilt by transformers: {tokens[0]}; nothing was written")
        modelfile = ollama.modelfile(
            "model.gguf", tokenizer.chat_template, generation, tokenizer.bos_token, tokenizer.eos_token
        )
        (folder / "Modelfile").write_text(modelfile, encoding="utf-8")
        numbers = dict(written, bytes=(folder / "model.gguf").stat().st_size, tokenizer_ids_equal=tokens == [] or None)
        notes = ["model.gguf's tokenizer, rebuilt by transformers, gives the probes the trained tokenizer's ids"]
        return Written(dtype, numbers, check, "model.gguf reloaded with AutoModelForCausalLM", notes if check else [])

    def next_steps(self, job: Job, target: Path) -> List[str]:
        size, name = (target / "model.gguf").stat().st_size / 2**20, served_name(job)
        return [
            f"ftlab: GGUF model in {target / 'model.gguf'} ({size:.1f} MiB)",
            f"run it with Ollama: cd {target} && ollama create {name} -f Modelfile && ollama run {name}",
            f"or with llama.cpp: llama-cli -m {target / 'model.gguf'} -cnv",
        ]


def served_name(job: Job) -> str:
    return model_name(Path(job.run.label).name.lower()) or "ftlab"
