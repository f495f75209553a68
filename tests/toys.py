"""Rooms filled from outside ftlab: a training method, a data format and an export format, each as a user would
write one in a package of their own. Nothing here registers itself; the tests add them for a with block
(Registry.added), or a subprocess finds them through an entry point (toys_plugin.py)."""

from dataclasses import dataclass
from pathlib import Path

from ftlab.data import chat
from ftlab.data.formats import Format, text_field
from ftlab.exports import ExportFormat, Written
from ftlab.exports.probes import logits, measure, refuse_beyond_tolerance
from ftlab.methods import Method, Metric
from ftlab.utils.options import opt

# ── a method: SFT on the chosen answers with an unlikelihood term on the rejected ones (Welleck et al. 2019) ─────


@dataclass
class UnlikelihoodOptions:
    name: str = "unlikelihood"
    alpha: float = opt(1.0, gt=0, example="method.alpha=0.5")
    """Weight of the unlikelihood term: -log(1 - p) summed over the rejected answer's tokens."""


class Unlikelihood(Method):
    name = "unlikelihood"
    summary = "SFT on the chosen answer, unlikelihood on the rejected one"
    Options = UnlikelihoodOptions
    kind = "pair"
    metrics = {"unlikelihood": Metric("unlikelihood term", validated=True)}

    def loss(self, options, forward, batch: dict):
        import torch

        logps, mask = forward.token_logps(batch)
        half = batch["pairs"]
        nll = -(logps[:half] * mask[:half]).sum(1)  # the chosen answers' tokens, learnt
        p = logps[half:].exp().clamp(max=1 - 1e-6)
        unlikely = -(torch.log1p(-p) * mask[half:]).sum(1)  # the rejected answers' tokens, unlearnt
        real = mask[:half].any(1)  # a filler row (a rank with no share of a short last batch) scores nothing
        per = (nll + options.alpha * unlikely) * real
        sums = {"loss": per.sum().detach(), "units": real.sum(), "unlikelihood": (unlikely * real).sum().detach()}
        return per.sum(), sums

    def ratios(self, sums: dict) -> dict:
        n = max(sums["units"], 1)
        return {"loss": sums["loss"] / n, "unlikelihood": sums["unlikelihood"] / n}


# ── a data format: {ask, tell} rows, one question and its answer ─────────────────────────────────────────────────


@dataclass
class AskTellColumns:
    ask: str = "ask"
    """the question."""
    tell: str = "tell"
    """the answer to learn."""


class AskTell(Format):
    name = "ask-tell"
    needs = "chat rows"
    priority = 5
    Columns = AskTellColumns

    def wants(self, columns) -> str:
        return f"ask-tell needs {columns.ask}+{columns.tell}"

    def detect(self, row: dict, columns) -> bool:
        return columns.ask in row and columns.tell in row

    def parse(self, row: dict, where: str, data) -> list:
        ask = text_field(row, data.columns.ask, where, key="ask")
        tell = text_field(row, data.columns.tell, where, key="tell")
        return [{"role": "user", "content": ask}, {"role": "assistant", "content": tell}]

    def tokenize(self, tokenizer, parsed, data, where: str):
        return chat.tokenize_conversation(tokenizer, parsed, data.max_seq_len, where, data.train_on)

    def prompt(self, row: dict, where: str, columns):
        if columns.ask not in row:
            return None
        messages = [{"role": "user", "content": text_field(row, columns.ask, where, key="ask")}]
        tell = text_field(row, columns.tell, where, key="tell", optional=True)
        return messages + ([{"role": "assistant", "content": tell}] if tell else [])


# ── an export format: the merged weights as one NumPy archive ───────────────────────────────────────────────────


class Npz(ExportFormat):
    name = "npz"
    folder = "npz"

    def describe(self, job, target: Path) -> str:
        return f"float32 arrays into {target}"

    def write(self, job, folder: Path) -> Written:
        import numpy as np
        import torch

        state = {k: v.detach().float().cpu().numpy() for k, v in job.model.state_dict().items()}
        np.savez(folder / "model.npz", **state)
        job.model.config.save_pretrained(folder)
        check = None
        if job.options.check:  # a fresh model of the same config, its weights read back from the archive
            from transformers import AutoConfig, AutoModelForCausalLM

            fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
            with np.load(folder / "model.npz") as saved:
                fresh.load_state_dict({k: torch.from_numpy(saved[k]) for k in saved.files}, strict=False)
            fresh.tie_weights()
            check = measure(job.reference, logits(fresh.eval(), job.batch), "float32")
            refuse_beyond_tolerance(check, "model.npz", "")
        return Written("float32", {"arrays": len(state)}, check, "model.npz read back into a fresh model")

    def next_steps(self, job, target: Path) -> list:
        return [f"ftlab: the merged weights in {target / 'model.npz'}; numpy.load it"]
