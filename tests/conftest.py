"""Compose the real configs, then shrink them: tiny model, tiny data, a few steps, CPU, fp32."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
CHAT = ASSETS / "chat.jsonl"
POSTGRES = os.environ.get("FTLAB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs two test processes on two cores: one thread each, and in each process they start, so that they
    # share the cores instead of oversubscribing them (torch reads this when it is first imported)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
pytest_plugins = ["hubserver"]  # the fake_hub fixture


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server the tests share: FTLAB_TEST_POSTGRES, default 127.0.0.1:5432, database test. Each test
    names its study or database uniquely. Without a server the test is skipped with that reason, except under
    CI=true, where a missing server fails: CI never skips these silently."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES, connect_timeout=5):
            pass
    except psycopg.OperationalError as e:
        reason = (
            f"no PostgreSQL server answers at {POSTGRES} ({str(e).strip().splitlines()[0]}); set "
            "FTLAB_TEST_POSTGRES=postgresql://user@host:port/database to one"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One model cache for the session, shared by pytest-xdist's workers: the SmolLM2 conversion, tiny models and
    tokenized data are built once (the cache writes its entries whole, so workers never see half of one)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker has a basetemp of its own below the run's
        shared = shared.parent
    path = shared / "ftlab-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def fresh_console():
    """Each test starts with ftlab's console as a new process has it: none yet, so the first line sets it up on stdout
    (a command run in this process before, ftlab.infer say, leaves its own on stderr). pytest's own handlers stay."""
    from ftlab.utils.console import log

    for handler in list(log.handlers):
        if type(handler).__module__.startswith(("ftlab", "logging")):  # ours: the console and a run's train.log
            log.removeHandler(handler)
            handler.close()


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch) -> Path:
    """Each test runs in its own folder, so outputs/ (and resume=last) never sees another test's runs, and no run
    lands in the checkout; a test names it when it reads what was written there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny(cache_dir):
    """Overrides that turn the default config into a seconds-long CPU run of the tiny model."""
    return [
        "model=tiny",
        f"data.path={CHAT}",
        "data.val_size=8",
        "data.batch_size=4",
        "trainer.max_steps=4",
        "trainer.precision=32-true",
        "trainer.checkpoint_every_n_steps=2",
        f"cache_dir={cache_dir}",
    ]


@pytest.fixture
def sweep_args(cache_dir):
    """A 2-step tiny-model sweep of the shipped lora preset."""
    return ["-m", "sweep=lora", "model=tiny", f"data.path={CHAT}", "data.val_size=8", "trainer.max_steps=2",
            "trainer.precision=32-true", f"cache_dir={cache_dir}"]  # fmt: skip


def run_main(*args, module: str = "ftlab", capsys) -> subprocess.CompletedProcess:
    """A command run in this process through its main(argv), as the console would (stdout, stderr, exit status):
    for what needs no process of its own, refusals above all. The CLI's refusals happen before Hydra starts."""
    import importlib

    main = importlib.import_module("ftlab.cli" if module == "ftlab" else module).main
    capsys.readouterr()
    argv, code = list(sys.argv), 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv  # the CLI hands Hydra its command line through sys.argv
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@contextmanager
def serving(run: Path, *overrides: str, api_key_env: str = "FTLAB_API_KEY"):
    """`python -m ftlab.serve run=RUN` on a free port in a thread of this process, until the block ends; yields the
    base URL (http://127.0.0.1:PORT/v1)."""
    import threading

    from ftlab.config.schema import ServeCommand
    from ftlab.serve import serve

    ready, box = threading.Event(), {}

    def started(url, http):
        box.update(url=url, http=http)
        ready.set()

    options = ServeCommand(run=str(run), port=0, api_key_env=api_key_env)
    thread = threading.Thread(target=serve, args=(options, list(overrides)), kwargs={"started": started}, daemon=True)
    thread.start()
    assert ready.wait(180), "the server did not start"
    try:
        yield box["url"]
    finally:
        box["http"].should_exit = True
        thread.join(30)


def run_cli(*args, cwd: Path, env_extra=None, module: str = "ftlab", stdin: str = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        input=stdin,
    )


def train_tiny(run_dir: Path, cache_dir: Path, *overrides) -> Path:
    """A finished tiny run with an adapter that moved (30 steps at a high rate), and a test split of 6 rows."""
    from ftlab import FineTune, compose

    FineTune(
        compose(
            [
                "model=tiny",
                f"data.path={CHAT}",
                "data.val_size=6",
                "data.test_size=6",
                "data.batch_size=4",
                "trainer.max_steps=30",
                "optim.lr=3e-3",
                "trainer.precision=32-true",
                "trainer.checkpoint_every_n_steps=1000",
                f"cache_dir={cache_dir}",
                *overrides,
            ]
        ),
        run_dir=run_dir,
    ).run()
    return run_dir


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache_dir) -> Path:
    """One finished tiny run for the tests that use a run (infer, evaluate, export); they must not write into it
    (each test that does works on a copy: see `fresh_run`)."""
    return train_tiny(tmp_path_factory.mktemp("trained") / "run", cache_dir)


@pytest.fixture(scope="session")
def trained_4bit(tmp_path_factory, cache_dir) -> Path:
    """The same run on a 4-bit base (QLoRA), for the exports that dequantize it; read-only like `trained`."""
    return train_tiny(tmp_path_factory.mktemp("trained4") / "run", cache_dir, "quant=4bit")


@pytest.fixture
def fresh_run(trained, tmp_path) -> Path:
    """A copy of the trained run that a test may write reports and exports into."""
    import shutil

    return Path(shutil.copytree(trained, tmp_path / "run"))


def prepare_data(*overrides, cls=None):
    """FineTune's data stages up to its data module, on the built-in byte tokenizer of model=tiny (no model
    needed): the tokenizer, the tokenized splits, their format, the numbers describing them and the training rows."""
    from types import SimpleNamespace

    from ftlab import FineTune, compose

    recipe = (cls or FineTune)(compose(["model=tiny", *overrides]))
    tokenizer = recipe.load_tokenizer(None)  # None: the built-in byte tokenizer, with data.chat_template applied
    data = recipe.prepare_data(tokenizer)
    return SimpleNamespace(
        recipe=recipe,
        tokenizer=tokenizer,
        prepared=data.prepared,
        data_format=data.prepared.format,
        stats=data.stats,
        rows=data.rows,
    )


def run_dirs(root: Path) -> list:
    """Run dirs under root/outputs, oldest first."""
    return sorted(p.parent.parent for p in (root / "outputs").glob("*/*/.hydra/config.yaml"))


def write_rows(path: Path, rows: list) -> Path:
    """Rows (dicts) written in the format the suffix names: .jsonl, .json, .csv or .parquet."""
    import csv
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def qa_rows(n: int, question="question", answer="answer") -> list:
    return [{question: f"What is {i} plus {i}?", answer: str(2 * i)} for i in range(n)]
