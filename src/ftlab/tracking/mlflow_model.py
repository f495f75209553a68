"""The adapter as an MLflow model: `mlflow.pyfunc.load_model("runs:/<run id>/model").predict(["question"])`
returns the answers. The model holds the adapter, its tokenizer and the run's config, so loading it rebuilds
the base model (and its quantization) and the generation settings exactly as `python -m ftlab.infer` would;
it needs ftlab installed."""
from pathlib import Path
from typing import List

import mlflow.pyfunc


class ChatAdapter(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from omegaconf import OmegaConf

        from ftlab import runs
        from ftlab.commands import apply_overrides

        cfg = apply_overrides(OmegaConf.load(context.artifacts["config"]), [])
        self.run = runs.Run("mlflow model", cfg, Path(context.artifacts["adapter"]), None)
        self.model, self.tokenizer, _ = runs.load(self.run)

    def predict(self, context, model_input: List[str], params=None) -> List[str]:
        from ftlab import generate

        cfg = self.run.cfg
        conversations = [[{"role": "user", "content": prompt}] for prompt in model_input]
        return [a.output for a in generate.answers(self.model, self.tokenizer, conversations, cfg.generation,
                                                   cfg.seed, cfg.data.train_on)]


def log_model(uri: str, run_id: str, run_dir: Path) -> None:
    import os
    from importlib.metadata import version

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small file is noise
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):  # the fluent API logs models into the active run
        mlflow.pyfunc.log_model(name="model", python_model=ChatAdapter(),
                                artifacts={"adapter": str(run_dir / "adapter"),
                                           "config": str(run_dir / ".hydra" / "config.yaml")},
                                pip_requirements=[f"ftlab=={version('ftlab')}"])
