"""MLflow (tracker=mlflow): a local SQLite store in the outputs root by default (no server), or any tracking
server; a finished run's adapter is logged as an MLflow model.

mlflow and Lightning's logger are imported inside the functions that use them (composing a config reads the
settings below, and mlflow takes seconds to import); `client()` imports mlflow the way ftlab wants it."""

import functools
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Optional

from ftlab.tracking import TRACKERS, Tracker
from ftlab.utils.console import log
from ftlab.utils.errors import ConfigError, first_line
from ftlab.utils.files import outputs_root, sqlite_file
from ftlab.utils.options import opt


@dataclass
class MlflowOptions:
    uri: Optional[str] = opt(None, example="tracker.mlflow.uri=http://127.0.0.1:5000")
    """Tracking server or store. null: a local SQLite store, sqlite:///outputs/mlflow.db (outputs/: the outputs
    root, $FTLAB_OUTPUTS if set; artifacts beside it in mlartifacts/); browse it with
    `mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`."""
    log_model: bool = True
    """Also log the adapter as an MLflow model that `mlflow.pyfunc.load_model(...).predict(prompts)` answers."""


@TRACKERS.register
class Mlflow(Tracker):
    name = "mlflow"
    Options = MlflowOptions
    package = "mlflow"

    def run(self, tracker_cfg, run_dir: Path, python_model=None):
        model = python_model() if python_model is not None and tracker_cfg.mlflow.log_model else None
        return MlflowBackend(tracker_cfg, model)


def quiet() -> None:
    """Before mlflow is first imported, wherever: it sets its loggers up on import, at INFO (table migrations and
    serialization notices on every run). Its errors still show; MLFLOW_LOGGING_LEVEL=INFO brings the rest back."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")


def client(uri: str):
    """An MlflowClient for `uri`, mlflow imported quietly."""
    quiet()
    from mlflow import MlflowClient

    return MlflowClient(uri)


def default_uri() -> str:
    # absolute: MLflow caches a store per URI string, so a relative one would keep pointing at the outputs/ of
    # the directory the process first used it in
    return f"sqlite:///{(outputs_root() / 'mlflow.db').resolve()}"


def default_artifacts() -> Path:
    """The embedded store's artifacts, beside it."""
    return (outputs_root() / "mlartifacts").resolve()


def tracking_uri(tracker) -> str:
    return tracker.mlflow.uri or default_uri()


@contextmanager
def quick_failure(seconds: int = 10):
    """MLflow retries an unreachable server for minutes by default; a pre-flight check should answer fast."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(seconds))
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {first_line(error, 200)}"


def experiment_id(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = default_artifacts().as_uri() if uri == default_uri() else None  # a server picks its own
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # another worker of the sweep created it a moment ago
        return client.get_experiment_by_name(name).experiment_id


def start_run(uri: str, experiment: str, name: str, tags: dict) -> str:
    """A new run with MLflow's usual context tags (user, source, git commit) added; returns its id."""
    mlflow_client = client(uri)
    from mlflow.tracking.context.registry import resolve_tags

    found = experiment_id(mlflow_client, experiment, uri)
    return mlflow_client.create_run(found, run_name=name, tags=resolve_tags(tags)).info.run_id


@functools.cache
def _logger_class():
    """Lightning's MLflow logger, except that the run is ftlab's to end (one run spans the validation before,
    the fit and the validation after), and a tracker failing mid-training costs a warning, not the training."""
    from lightning.pytorch.loggers import MLFlowLogger

    class Logger(MLFlowLogger):
        _failed = False

        def finalize(self, status: str) -> None:
            pass

        def log_metrics(self, metrics, step=None) -> None:
            if self._failed:
                return
            try:
                super().log_metrics(metrics, step)
            except Exception as e:
                self._failed = True
                log.info(
                    f"MLflow: logging failed ({_one_line(e)}); training goes on, every metric stays in logs/metrics.csv"
                )

    return Logger


class MlflowBackend:
    def __init__(self, tracker, python_model=None):
        self.tracker, self.uri, self.python_model = tracker, tracking_uri(tracker), python_model
        self.client = self.run_id = None

    def check(self) -> str:
        database = sqlite_file(self.uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        try:
            with quick_failure():
                client(self.uri).search_experiments(max_results=1)
        except Exception as e:
            raise ConfigError(
                f"tracker.mlflow.uri={self.uri} cannot be reached ({_one_line(e)}); start the "
                "tracking server, fix the URI, or use tracker=none"
            ) from None
        return f"MLflow: {self.uri}, experiment '{self.tracker.experiment}'"

    def start(self, name: str, params: dict, tags: dict, sweep):
        from mlflow.entities import Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = dict(tags)
        if sweep is not None:
            tags.update({"ftlab.sweep": sweep.study, "ftlab.trial": str(sweep.number)})
            if sweep.mlflow_parent:
                tags[MLFLOW_PARENT_RUN_ID] = sweep.mlflow_parent
        self.run_id = start_run(self.uri, self.tracker.experiment, name, tags)
        self.client = client(self.uri)
        batch = [Param(k, str(v)[:6000]) for k, v in params.items()]  # 6000: MLflow's longest param value
        for i in range(0, len(batch), 100):  # and at most 100 params per call
            self.client.log_batch(self.run_id, params=batch[i : i + 100])
        return _logger_class()(experiment_name=self.tracker.experiment, tracking_uri=self.uri, run_id=self.run_id)

    def where(self) -> str:
        return f"MLflow: run {self.run_id} in experiment '{self.tracker.experiment}' ({self.uri})"

    def finish(self, final: dict, files: list, run_dir: Path, status: str) -> None:
        if self.run_id is None:  # never started
            return
        from mlflow.entities import Metric

        try:
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in final.items()])
            for f in files:
                if f.is_dir():
                    self.client.log_artifacts(self.run_id, str(f), f.name)
                else:
                    self.client.log_artifact(self.run_id, str(f))
            model_wanted = self.tracker.mlflow.log_model and self.python_model is not None
            if model_wanted and status == "FINISHED" and (run_dir / "adapter").is_dir():
                log_model(self.uri, self.run_id, run_dir, self.python_model)
        except Exception as e:
            log.info(f"MLflow: could not log the final results ({_one_line(e)}); they are all in {run_dir}")
        finally:
            self.client.set_terminated(self.run_id, status)


def log_model(uri: str, run_id: str, run_dir: Path, python_model) -> None:
    """`python_model` (an mlflow.pyfunc.PythonModel) into the run as `model`, with the adapter and the run's
    config as its artifacts."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small file is noise
    client(uri)  # mlflow imported quietly
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):  # the fluent API logs models into the active run
        mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts={"adapter": str(run_dir / "adapter"), "config": str(run_dir / ".hydra" / "config.yaml")},
            pip_requirements=[f"ftlab=={version('ftlab')}"],
        )
