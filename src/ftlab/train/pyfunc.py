"""A finished run as an MLflow model: `mlflow.pyfunc.load_model("runs:/<run id>/model").predict(["question"])`
returns the answers. The model holds the adapter, its tokenizer and the run's config, so loading it rebuilds the
base model (and its quantization) and the generation settings through the recipe's own stages, exactly as
`python -m ftlab.infer` would; it needs ftlab installed. tracking/ logs it with a finished MLflow run."""

from pathlib import Path
from typing import List

import mlflow.pyfunc
from omegaconf import OmegaConf

from ftlab.config.overrides import apply_overrides
from ftlab.use import generate


class ChatAdapter(mlflow.pyfunc.PythonModel):
    def __init__(self, recipe_cls):
        self.recipe_cls = recipe_cls  # FineTune or the subclass that trained the run, pickled by reference

    def load_context(self, context):
        self.recipe = self.recipe_cls(apply_overrides(OmegaConf.load(context.artifacts["config"]), []))
        adapter = Path(context.artifacts["adapter"])
        self.tokenizer = self.recipe.load_trained_tokenizer(adapter)
        self.model = self.recipe.load_trained(adapter)

    def predict(self, context, model_input: List[str], params=None) -> List[str]:
        cfg = self.recipe.cfg
        prompts = [
            self.recipe.prompt_ids([{"role": "user", "content": p}], f"prompt {i + 1}")
            for i, p in enumerate(model_input)
        ]
        return [a.output for a in generate.answers(self.model, self.tokenizer, prompts, cfg.generation, cfg.seed)]
