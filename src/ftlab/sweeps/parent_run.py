"""The MLflow parent run of a sweep (tracker=mlflow or all): trials nest under it, it carries the best result.

Its id is kept in the study's attributes, so a resumed sweep and every worker of a shared study use the
same parent. W&B needs no parent: its trials share the group named after the study (tracking/).
"""

from typing import Optional

from ftlab.tracking import chosen, mlflow_backend  # light: mlflow itself loads when a parent run is made

ATTR = "ftlab_mlflow_parent_run"


def _tracker(config):
    tracker = config.get("tracker")
    return tracker if tracker is not None and "mlflow" in chosen(tracker) else None


def start(config, study) -> Optional[str]:
    """The parent run's id, created on the study's first start; None without MLflow. Call under the
    budget lock, so two workers starting together make one parent."""
    tracker = _tracker(config)
    if tracker is None:
        return None
    run_id = study.user_attrs.get(ATTR)
    if run_id is None:
        uri = mlflow_backend.tracking_uri(tracker)
        run_id = mlflow_backend.start_run(uri, tracker.experiment, study.study_name, {"ftlab.sweep": study.study_name})
        study.set_user_attr(ATTR, run_id)
    return run_id


def finish(config, run_id: Optional[str], study, objective: str) -> None:
    """The best trial so far on the parent (metric best/<objective>, tags best.<param>), and its status."""
    if run_id is None:
        return
    client = mlflow_backend.client(mlflow_backend.tracking_uri(_tracker(config)))
    try:
        best = study.best_trial
    except ValueError:  # no trial completed
        best = None
    if best is not None:
        client.log_metric(run_id, f"best/{objective}", best.value, step=len(study.trials))
        client.set_tag(run_id, "best.trial", str(best.number))
        for key, value in best.params.items():
            client.set_tag(run_id, f"best.{key}", str(value))
    client.set_terminated(run_id, "FINISHED")
