"""Trackers, read back the way a user would: MlflowClient (local store and a real server), W&B's offline files."""

import csv
import json
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import CHAT, run_cli, run_dirs
from ftlab import FineTune, compose
from ftlab.utils.errors import ConfigError

ARTIFACTS = {
    "adapter/adapter_model.safetensors",
    "adapter/adapter_config.json",
    "adapter/chat_template.jinja",
    "config.yaml",
    "metrics.json",
    "loss.png",
    "README.md",
    "train.log",
}
LIVE = ("train/loss", "train/lr", "train/grad_norm", "tok/s", "sys/peak_memory_gb")


def artifact_paths(client, run_id, path=None) -> set:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def csv_series(run_dir: Path, key: str) -> list:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_training_logs_lr_grad_norm_and_peak_memory_beside_the_loss(workdir, tiny):
    run = FineTune(compose(tiny + ["trainer.log_every_n_steps=1"])).run().run_dir
    lrs = [v for _, v in csv_series(run, "train/lr")]
    assert len(lrs) == 4 and lrs[0] == pytest.approx(2e-4)  # the rate each step applied: cosine decay from 2e-4
    assert lrs == sorted(lrs, reverse=True) and 0 < lrs[-1] < 1e-4
    assert all(v > 0 for _, v in csv_series(run, "train/grad_norm"))
    assert all(0.1 < v < 64 for _, v in csv_series(run, "sys/peak_memory_gb"))  # this process's RSS, in GiB


def test_an_mlflow_run_holds_config_metrics_artifacts_and_a_loadable_model(workdir, tiny):
    import mlflow
    from mlflow import MlflowClient

    FineTune(compose(tiny + ["tracker=mlflow", "trainer.log_every_n_steps=1", "tracker.tags=[baseline]"])).run()
    (run_dir,) = run_dirs(workdir)
    client = MlflowClient(f"sqlite:///{workdir}/outputs/mlflow.db")  # the embedded default: no server
    (run,) = client.search_runs([client.get_experiment_by_name("ftlab").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("ftlab-20")
    params, tags = run.data.params, run.data.tags
    assert params["lora.r"] == "16" and params["model.name"] == "ftlab/tiny-llama" and params["data.path"] == str(CHAT)
    assert params["trainer.max_steps"] == "4" and "hub.token" in params
    assert tags["model"] == "ftlab/tiny-llama" and tags["quant"] == "none" and tags["lora.r"] == "16"
    assert tags["data"] == "chat.jsonl" and "baseline" in tags
    history = {key: client.get_metric_history(run.info.run_id, key) for key in LIVE + ("val/loss",)}
    assert [m.step for m in history["train/loss"]] == [0, 1, 2, 3]
    assert [m.value for m in history["train/loss"]] == pytest.approx([v for _, v in csv_series(run_dir, "train/loss")])
    assert len(history["val/loss"]) == 2  # before and after training
    assert all(len(history[key]) == 4 for key in LIVE)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["val_loss_after"] == pytest.approx(metrics["val_loss_after"])
    assert run.data.metrics["steps"] == 4
    assert ARTIFACTS <= artifact_paths(client, run.info.run_id)
    # the adapter as an MLflow model answers prompts after a round trip through the store
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/outputs/mlflow.db")
    answers = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(["What is 2 plus 2?", "Hi"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, postgres_url):
    """A real `mlflow server` on 127.0.0.1, its runs in a PostgreSQL database of its own, stopped after."""
    import psycopg

    database = f"ftlab_mlflow_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {database}")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"{postgres_url.rsplit('/', 1)[0]}/{database}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.mark.process
def test_runs_go_to_a_tracking_server_backed_by_postgresql(workdir, tiny, mlflow_server):
    from mlflow import MlflowClient

    server = [f"tracker.mlflow.uri={mlflow_server}", "tracker.experiment=server", "tracker.run_name=on-the-server"]
    FineTune(compose(tiny + ["tracker=mlflow", *server])).run()
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("server").experiment_id])
    assert run.info.run_name == "on-the-server" and run.info.status == "FINISHED"
    assert run.data.params["lora.r"] == "16" and len(client.get_metric_history(run.info.run_id, "val/loss")) == 2
    assert ARTIFACTS <= artifact_paths(client, run.info.run_id)  # uploaded through the server
    assert not (workdir / "outputs" / "mlflow.db").exists()


def test_an_unreachable_tracking_server_stops_the_run_before_anything_loads(workdir, tiny, capsys):
    started = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        FineTune(compose(tiny + ["tracker=mlflow", f"tracker.mlflow.uri=http://127.0.0.1:{free_port()}"])).run()
    assert "tracker.mlflow.uri=http://127.0.0.1:" in str(e.value) and "cannot be reached" in str(e.value)
    assert "\n" not in str(e.value)  # one line
    assert time.perf_counter() - started < 60 and "Loading tokenizer" not in capsys.readouterr().out
    assert not list((workdir / "outputs").glob("*/*"))


def wandb_records(run_dir: Path) -> list:
    """The records of a W&B offline run (.wandb: the LevelDB log format, 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, chunks, out = path.read_bytes(), 7, b"", []  # 7: the file header
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the rest of the block is padding
            pos += left
            continue
        chunks = (b"" if kind in (1, 2) else chunks) + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(chunks)
            out.append(record)
    return out


def wandb_history(records, key: str) -> list:
    return [
        float(i.value_json)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for i in r.history.item
        if (i.key or "/".join(i.nested_key)) == key
    ]


def test_a_wandb_offline_run_holds_the_config_and_the_loss_history(workdir, tiny, capsys):
    import wandb
    from omegaconf import OmegaConf

    FineTune(compose(tiny + ["tracker=wandb", "trainer.log_every_n_steps=1"])).run()
    wandb.teardown()  # in this process, W&B's service writes the run's file fully only when it stops
    (run_dir,) = run_dirs(workdir)
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    assert f"wandb sync {files.parent.relative_to(workdir)}" in capsys.readouterr().out  # the run dir as made
    records = wandb_records(run_dir)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name.startswith("ftlab-20") and run.job_type == "train"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}  # what the W&B UI will show
    assert config["lora.r"] == 16 and config["model.name"] == "ftlab/tiny-llama" and config["data.path"] == str(CHAT)
    assert wandb_history(records, "train/loss") == pytest.approx([v for _, v in csv_series(run_dir, "train/loss")])
    assert len(wandb_history(records, "val/loss")) == 2 and len(wandb_history(records, "train/grad_norm")) == 4
    # the saved config rides along, to re-run from
    assert OmegaConf.load(files / "ftlab-config.yaml") == OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert {"metrics.json", "README.md", "loss.png", "train.log"} <= {p.name for p in files.iterdir()}


def test_wandb_online_without_a_key_fails_in_one_line_before_loading(workdir, tiny, monkeypatch):
    monkeypatch.setenv("HOME", str(workdir))  # no ~/.netrc
    monkeypatch.setenv("WANDB_API_KEY", "")
    with pytest.raises(ConfigError, match="tracker.wandb.mode=online needs an API key") as e:
        FineTune(compose(tiny + ["tracker=wandb", "tracker.wandb.mode=online"])).run()
    assert "\n" not in str(e.value)
    assert not list((workdir / "outputs").glob("*/*"))


@pytest.mark.process
def test_sweep_trials_nest_under_one_parent_run(workdir, sweep_args):
    from mlflow import MlflowClient

    result = run_cli(
        *sweep_args,
        "hydra.sweeper.n_trials=2",
        "tracker=all",
        "tracker.experiment=sweeps",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{workdir}/outputs/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r is not parent), key=lambda r: int(r.data.tags["ftlab.trial"]))
    assert parent.info.run_name == "lora" and parent.info.status == "FINISHED"
    assert [r.data.tags["mlflow.parentRunId"] for r in children] == [parent.info.run_id] * 2
    assert [r.info.run_name for r in children] == ["lora-trial-0", "lora-trial-1"]
    assert [r.data.params["sweep.trial"] for r in children] == ["0", "1"]
    best = min(r.data.metrics["val_loss_after"] for r in children)
    assert parent.data.metrics["best/val_loss_after"] == pytest.approx(best)
    for n in range(2):  # W&B: one group per study, each trial a run of it
        (run,) = [
            r.run
            for r in wandb_records(workdir / "outputs" / "sweeps" / "lora" / f"trial-{n}")
            if r.WhichOneof("record_type") == "run"
        ]
        assert (run.run_group, run.job_type, run.display_name) == ("lora", "trial", f"lora-trial-{n}")


def test_an_interrupted_run_is_closed_as_killed(workdir, tiny):
    from mlflow import MlflowClient

    from ftlab import compose
    from test_train import InterruptedRun  # Ctrl+C at step 3

    with pytest.raises((SystemExit, KeyboardInterrupt)):
        InterruptedRun(compose(tiny + ["trainer.max_steps=6", "trainer.log_every_n_steps=1", "tracker=mlflow"])).run()
    client = MlflowClient(f"sqlite:///{workdir}/outputs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ftlab").experiment_id])
    assert run.info.status == "KILLED" and len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1


def test_the_default_store_follows_the_working_directory(tmp_path, monkeypatch, tiny):
    """MLflow caches a store per URI string; runs from two directories in one process each land in their own."""
    from mlflow import MlflowClient

    from ftlab import FineTune, compose

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        FineTune(compose(tiny + ["trainer.max_steps=1", "tracker=mlflow", "tracker.mlflow.log_model=false"])).run()
    for name in ("a", "b"):
        client = MlflowClient(f"sqlite:///{tmp_path / name}/outputs/mlflow.db")
        assert len(client.search_runs([client.get_experiment_by_name("ftlab").experiment_id])) == 1
