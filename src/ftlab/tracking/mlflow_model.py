"""The adapter as an MLflow model: `mlflow.pyfunc.load_model("runs:/<run id>/model").predict(["question"])`
returns the answers. The model holds the adapter and its tokenizer; loading it loads the base model named
in the adapter's config (a Hub id, or the local path training read it from), and needs ftlab installed."""
from typing import List

import mlflow.pyfunc

MAX_NEW_TOKENS = 128


class ChatAdapter(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from ftlab import generate

        self.model, self.tokenizer = generate.load(context.artifacts["adapter"])
        self.max_new_tokens = (context.model_config or {}).get("max_new_tokens", MAX_NEW_TOKENS)

    def predict(self, context, model_input: List[str], params=None) -> List[str]:
        from ftlab import generate

        conversations = [[{"role": "user", "content": prompt}] for prompt in model_input]
        return generate.answers(self.model, self.tokenizer, conversations, self.max_new_tokens)


def log_model(uri: str, run_id: str, adapter_dir) -> None:
    import os
    from importlib.metadata import version

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small file is noise
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):  # the fluent API logs models into the active run
        mlflow.pyfunc.log_model(name="model", python_model=ChatAdapter(), artifacts={"adapter": str(adapter_dir)},
                                pip_requirements=[f"ftlab=={version('ftlab')}"],
                                model_config={"max_new_tokens": MAX_NEW_TOKENS})
