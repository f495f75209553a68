"""Tokens given by environment or override are used, and written nowhere: run dir, tracking store, W&B dir."""

import logging
from pathlib import Path

import pytest

from conftest import run_cli, run_dirs
from ftlab.utils import secrets

PLANTED = {"HF_TOKEN": "hf_envPlantedToken4821", "WANDB_API_KEY": "wandbEnvPlantedKey9377"}
OVERRIDDEN = {"hub.token": "hf_overridePlantedToken5512", "tracker.wandb.api_key": "wandbOverridePlanted6604"}


def online(hub, **more) -> dict:
    """A training subprocess's environment that lets huggingface_hub talk, to the fake Hub only."""
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1", **more}


def files_holding(root: Path, needles) -> list:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return found


def test_secret_overrides_leave_the_command_line_for_the_environment(monkeypatch):
    for variable in secrets.KEYS.values():
        monkeypatch.delenv(variable, raising=False)
    argv = ["model=tiny", "hub.token=hf_abcdefgh", "+tracker.wandb.api_key='k1234567'", "lora.r=8"]
    assert secrets.take_from_overrides(argv) == ["model=tiny", "lora.r=8"]
    import os

    assert os.environ["HF_TOKEN"] == "hf_abcdefgh" and os.environ["WANDB_API_KEY"] == "k1234567"
    assert secrets.redact("token hf_abcdefgh and k1234567") == "token *** and ***"


def test_log_lines_are_masked(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_maskMe12345")
    logger = logging.getLogger("ftlab.test_secrets")
    handler = logging.StreamHandler()
    handler.addFilter(secrets.Redact())
    logger.addHandler(handler)
    try:
        logger.warning("pushing with %s", "hf_maskMe12345")
    finally:
        logger.removeHandler(handler)
    assert "pushing with ***" in capsys.readouterr().err


@pytest.mark.process
def test_planted_tokens_are_used_but_written_nowhere(workdir, tiny, fake_hub):
    overrides = [f"{k}={v}" for k, v in OVERRIDDEN.items()]
    result = run_cli(
        *tiny,
        "tracker=all",
        "hub.push=true",
        "hub.repo_id=me/secret-test",
        *overrides,
        cwd=workdir,
        env_extra=online(fake_hub, **PLANTED),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # the override won over the environment, and reached the Hub
    commits = [r for r in fake_hub.requests if "/commit/" in r.path]
    assert [r.authorization for r in commits] == [f"Bearer {OVERRIDDEN['hub.token']}"]
    assert set(fake_hub.files) >= {"adapter_model.safetensors", "adapter_config.json", "README.md"}
    (run_dir,) = run_dirs(workdir)
    assert (run_dir / "wandb").is_dir() and (workdir / "outputs" / "mlflow.db").is_file()
    needles = [*PLANTED.values(), *OVERRIDDEN.values()]
    assert files_holding(workdir, needles) == []  # run dir, .hydra, W&B files, MLflow store and artifacts
    assert not any(n in result.stdout + result.stderr for n in needles)


@pytest.mark.process
def test_a_failed_push_keeps_the_results_and_says_how_to_push_again(workdir, tiny, fake_hub):
    fake_hub.fail_commits, fake_hub.fail_status = 99, 503
    result = run_cli(
        *tiny,
        "hub.push=true",
        "hub.repo_id=me/flaky",
        "hub.retries=2",
        "hub.retry_wait=0.01",
        "tracker=mlflow",
        cwd=workdir,
        env_extra=online(fake_hub, HF_TOKEN=PLANTED["HF_TOKEN"]),
    )
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    (run_dir,) = run_dirs(workdir)
    assert f"python -m ftlab.publish {run_dir}" in result.stderr and "after 2 retries" in result.stderr
    assert result.stdout.count("retry ") == 2
    for name in ("adapter/adapter_model.safetensors", "metrics.json", "README.md", "loss.png"):
        assert (run_dir / name).exists()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/outputs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ftlab").experiment_id])
    assert run.info.status == "FINISHED"  # the training did finish; only the upload failed


@pytest.mark.process
def test_a_rejected_token_stops_the_run_before_training(workdir, tiny, fake_hub):
    fake_hub.reject_all = 401
    result = run_cli(
        *tiny,
        "hub.push=true",
        "hub.repo_id=me/nope",
        cwd=workdir,
        env_extra=online(fake_hub, HF_TOKEN=PLANTED["HF_TOKEN"]),
    )
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert "401" in result.stderr and "HF_TOKEN" in result.stderr and PLANTED["HF_TOKEN"] not in result.stderr
    assert "[5/6] Training" not in result.stdout and run_dirs(workdir) == []
