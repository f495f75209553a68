"""A finished run as an MLflow model: `mlflow.pyfunc.load_model("runs:/<run id>/model").predict(["question"])`
returns the answers. The model holds the adapter, its tokenizer and the run's config, so loading it rebuilds the
base model (and its quantization) and the generation settings through the recipe's own stages, exactly as
`python -m ftlab.infer` would; it needs ftlab installed. tracking/ logs it with a finished MLflow run."""

from pathlib import Path
from typing import List

import mlflow.pyfunc
from omegaconf import OmegaConf

from ftlab.config.overrides import apply_overrides
from ftlab.train.trained import Trained
from ftlab.use import generate, runs


class ChatAdapter(mlflow.pyfunc.PythonModel):
    def __init__(self, recipe_cls):
        self.recipe_cls = recipe_cls  # FineTune or the subclass that trained the run, pickled by reference
        self.trained = self.model = None  # mlflow calls load_context before predict: its hook, its order

    def load_context(self, context):
        adapter = Path(context.artifacts["adapter"])
        cfg = apply_overrides(OmegaConf.load(context.artifacts["config"]), [])
        self.trained = Trained(runs.Run(str(adapter), cfg, adapter, None), self.recipe_cls)
        self.model = self.trained.model()

    def predict(self, context, model_input: List[str], params=None) -> List[str]:
        cfg = self.trained.cfg
        prompts = [
            self.trained.prompt([{"role": "user", "content": p}], f"prompt {i + 1}") for i, p in enumerate(model_input)
        ]
        answers = generate.answers(self.model, self.trained.tokenizer, prompts, cfg.generation, cfg.seed)
        return [a.output for a in answers]
