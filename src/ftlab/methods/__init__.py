"""Training methods, one module each (method=NAME):

  sft.py    supervised fine-tuning: the answers of chat rows, or every token of text (continued pretraining)
  dpo.py    Direct Preference Optimization (with IPO and hinge losses), relative to the reference model
  orpo.py   SFT on the chosen answers plus an odds-ratio penalty on the rejected ones; no reference
  simpo.py  a length-normalised reward margin; no reference
  kto.py    unpaired desirable and undesirable answers, relative to the reference model

A method declares everything about itself: its options (the method.* keys, a dataclass whose fields exist only
where the method reads them), the kind of example it trains on (data/kinds/; the data formats that make that
kind are the formats it reads), whether it needs the reference model (the same weights with the adapter
switched off), what a step's loss is the mean over, its loss, what it logs beside the loss (and validates, before and
after training), its rules across options, and what the model card says. Evaluation scores a run's answers on
held-out rows of its data and adds what the kind of example measures (a pair's preference accuracy: data/kinds/), so
a method is evaluated through the kind it trains on. The schema's method choices and sections, the key checks, the
data checks and the card are read from here; the LightningModule (train/module.py) is one for all methods and asks
the method for the loss of each micro-batch.

Composing a config reads every method's options, and composing must not load torch: a method module imports
torch inside the functions that compute, never at its top.

    @METHODS.register
    class MyMethod(Method): name = "mine"; Options = MyOptions; kind = "pair"; ...
"""

from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

from ftlab.utils.registry import Registry

METHODS = Registry("method", __name__)


@dataclass
class Metric:
    """A number a method logs beside its loss: train/<name> every step, val/<name> at each validation."""

    label: str
    """How the model card and the console name it."""
    percent: bool = False
    """Shown as a percentage."""
    shown: bool = False
    """Also on the console's progress bar."""
    validated: bool = False
    """Also measured at each validation (val/<name>), printed beside the validation loss and kept in metrics.json
    before and after training."""


class Method:
    name: str
    summary: str
    """One line: what it learns (--help, docs/options.md)."""
    Options: type
    """Its options: a dataclass whose `name` defaults to the method's name, each other field a method.* key."""
    kind: str = "tokens"
    """The kind of example it trains on (data/kinds/): tokens, pair, judged, prompt."""
    reference: bool = False
    """Its loss compares the model with the reference: the base weights with the adapter switched off."""
    per_example: bool = True
    """A step's loss is the mean over its examples; False: over its supervised tokens."""
    packs: bool = False
    """It learns from single token sequences, so data.packing may pack them."""
    fused_loss: bool = False
    """It can use model.liger_kernels' fused linear cross-entropy."""
    metrics: Dict[str, Metric] = {}
    """What it logs beside the loss (`ratios` computes them)."""

    def logged(self, options) -> Dict[str, Metric]:
        """What it logs beside the loss with these options: `metrics`, and any named by its options (GRPO's reward
        per function)."""
        return self.metrics

    def checks(self, cfg) -> Iterable[str]:
        """Rules across its options and the rest of the config: one message each, naming the fix."""
        return ()

    samples: bool = False
    """It learns from answers the model samples (online): ftlab.preview shows the starting model's (`preview`)."""

    def preview(self, options, model, tokenizer, examples: list, seed: int) -> list:
        """Lines that show what training would make of the starting model on `examples` (a method that `samples`)."""
        return []

    def scores(self, options, answers: List[str], examples: List[dict]) -> dict:
        """What evaluation adds for a method that `samples`: its measure of each held-out answer (examples: of its
        kind, one per answer), averaged; report.json's and metrics.json's eval_<name>."""
        return {}

    def passes(self, options) -> int:
        """Optimizer steps it takes on each step's micro-batches (GRPO's mu: several passes over what it sampled)."""
        return 1

    def check_data(self, options, rows: list, where: str) -> None:
        """Refuse training rows (examples of its kind, from `where`) it cannot learn from, before the model loads:
        ConfigError naming the key and the fix."""

    def loss(self, options, forward, batch: dict) -> Tuple[object, dict]:
        """(the micro-batch's loss summed over its units, with gradient; {name: sum} of what it logs, each a number
        that adds up over micro-batches and ranks, with `loss` and `units` among them). `forward` runs the model on
        the batch (train/module.py: Forward); `options`: its options."""
        raise NotImplementedError

    def ratios(self, sums: dict) -> dict:
        """The logged numbers from the sums over a step or a validation pass: the loss, then its metrics."""
        return {"loss": sums["loss"] / max(sums["units"], 1)}

    def loss_on(self, cfg, data_format) -> str:
        """What the model card says the loss is on, for data in `data_format` (its name, or None)."""
        return f"the answers' log-probabilities (`method={self.name}`)"
