"""Exports: the files other tools load from a finished run, one format per module of formats/, each proven before
it appears (python -m ftlab.export format=NAME):

  formats/merged.py        a transformers model folder: the adapter merged into its base
  formats/gguf.py          model.gguf for llama.cpp and Ollama, with a Modelfile
  formats/gguf_adapter.py  the adapter alone as a llama.cpp LoRA GGUF

An export format declares whether it writes the merged model or the base alone (the adapter written apart), the
command's options it reads, what it refuses before any model loads, how it writes and checks its files (within a
tolerance of the adapter model's logits on probe conversations), and the commands it prints for what comes next.
The export command (export.py) is a door: it finds the run, loads the adapter model, and writes the chosen format
into a folder that appears whole, with export.json, or not at all.

The helpers the formats share: gguf_model.py (a merged model as GGUF), gguf_tokenizer.py (the tokenizer as GGUF
metadata), gguf_lora.py (the adapter as llama.cpp's LoRA GGUF), ollama.py (the Modelfile), probes.py (the probes,
logits and tolerances), vllm.py (the `vllm serve` command for a run's adapter, unmerged, and what vLLM refuses).

Below the commands and hub/, above data/ and model/: it reads tokenizers, configs and state dicts and writes
files; it trains nothing.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ftlab.utils.registry import Registry

EXPORTS = Registry("export format", "ftlab.exports.formats")


@dataclass
class Job:
    """What an export format writes from."""

    run: object
    """The run (use/runs.py: label, cfg, adapter, run_dir)."""
    options: object
    """The export command's options (config/schema.py: ExportCommand)."""
    tokenizer: object
    """The tokenizer the run trained with, chat template included."""
    model: object
    """The adapter merged into its base, or the base alone (the format's `needs`), in float32."""
    reference: object
    """The adapter model's logits on the probes (probes.py): what the written files must reproduce."""
    batch: dict
    """The probes, tokenized as training tokenizes them."""
    source: str
    """Where the base model was loaded from."""


@dataclass
class Written:
    """What a format wrote and measured, for export.json and the console."""

    dtype: str
    """The stored dtype, as export.json names it."""
    numbers: dict = field(default_factory=dict)
    """What it wrote (sizes, tensor types ...)."""
    check: Optional[dict] = None
    """The check's numbers (probes.measure), None with check=false."""
    checked: str = ""
    """What the check reloaded, as the console line says it."""
    notes: List[str] = field(default_factory=list)
    """More lines for the console, after the check's."""


class ExportFormat:
    name: str
    folder: str
    """The default output, <run dir>/<folder>."""
    needs: str = "merged"
    """What it writes from: "merged" (the adapter merged into its base) or "base" (the base alone)."""
    options: tuple = ()
    """The export command's options it reads, beside run, output and check; any other set is refused."""
    doing: str = "Merging"
    """Its stage line, while the model it writes from is made."""

    def refusals(self, adapter_config: dict) -> List[str]:
        """What it cannot hold in this adapter (its adapter_config.json), before any model loads."""
        return []

    def check_model(self, config) -> None:
        """Refuse a model (its transformers config) it cannot write, before the merge."""

    def describe(self, job: Job, target: Path) -> str:
        """The "Saving and checking" stage's detail: what goes where."""
        raise NotImplementedError

    def write(self, job: Job, folder: Path) -> Written:
        """Write the files into `folder` (new, renamed into place afterwards) and, unless job.options.check is off,
        check them; FtlabError when a check fails (nothing appears)."""
        raise NotImplementedError

    def next_steps(self, job: Job, target: Path) -> List[str]:
        """What to run next, as the last console lines."""
        return []


def model_name(name: str) -> str:
    """`name` as a served model's name (vLLM's --lora-modules, Ollama's create): letters, digits and - _ . kept,
    anything else a -; "" when nothing is left."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
