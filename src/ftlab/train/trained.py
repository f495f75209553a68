"""A finished run, loaded for the commands that use one (infer, evaluate, export) and for the MLflow model.

    trained = Trained(runs.locate("outputs/2026-12-01/10-34-36", []), FineTune)
    model = trained.model()
    text, ids = trained.prompt([{"role": "user", "content": "Hi"}])

Its tokenizer is the one saved beside the adapter (with the chat template training used); its model is the base
loaded (and quantized) as training loaded it, with the adapter on top; prompts, prompts files and held-out
examples are rendered and tokenized as training tokenized them. All of it goes through the stages of the recipe
class that trained the run (FineTune, or a subclass passed as `recipe_cls`), so what a subclass changes applies
here too; nothing of training (trackers, the Trainer, a run dir) is set up.
"""

from pathlib import Path
from typing import List, Optional

from ftlab.use import prompts, runs


class Trained:
    def __init__(self, run: runs.Run, recipe_cls):
        self.run = run
        self.stages = recipe_cls(run.cfg)  # the recipe's stages, with the run's saved config
        self.tokenizer = self.stages.load_trained_tokenizer(run.adapter)

    @property
    def cfg(self):
        return self.run.cfg

    def model(self, base_only: bool = False):
        """The model in eval mode: the base with the adapter (none with `base_only`, or for a plain model)."""
        return self.stages.load_trained(self.run.adapter, base_only=base_only)

    def base(self):
        """The base model alone, as training loaded it (quantized if it was), without the adapter."""
        return self.stages.load_base_model(self.stages.model_source())

    def prompt(self, messages: List[dict], where: str = "prompt") -> tuple:
        """(text, token ids) asking for the next assistant turn after `messages`."""
        return self.stages.prompt_ids(self.tokenizer, messages, where)

    def prompts(self, path: Path, system: Optional[str]) -> List[prompts.Prompt]:
        """A prompts file's lines, in any data format with the run's columns, or in the recipe's own row format."""

        def own_rows(row: dict, where: str):
            return self.stages.to_conversation(row, where, None)

        return prompts.read(path, self.cfg.data.columns, system, own_rows)

    def examples(self) -> tuple:
        """([scoring.Example], data fingerprint): the held-out eval.split of the run's data."""
        return self.stages.evaluation_examples(self.tokenizer)
