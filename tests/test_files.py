"""What ftlab writes appears whole or not at all; outputs go where FTLAB_OUTPUTS says; every command exits the
same way on an error."""

import importlib
import os
import stat
import subprocess
import sys

import pytest

from conftest import run_cli, run_dirs
from ftlab.utils.errors import FtlabError
from ftlab.utils.files import atomic, new_run_dir, outputs_root, sqlite_file, write_json


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"loss": 1.0})
    with pytest.raises(RuntimeError), atomic(path) as tmp:
        tmp.write_text('{"loss": ')  # half a file, then a crash
        raise RuntimeError("killed")
    assert path.read_text() == '{\n  "loss": 1.0\n}\n'
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # the permissions of any other file


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "eval"
    with pytest.raises(RuntimeError), atomic(target, directory=True) as tmp:
        (tmp / "report.json").write_text("{}")
        raise RuntimeError("failed before the report was complete")
    assert os.listdir(tmp_path) == []
    with atomic(target, directory=True) as tmp:
        (tmp / "report.json").write_text("{}")
    assert os.listdir(target) == ["report.json"]
    with pytest.raises(OSError), atomic(target, directory=True) as tmp:  # never onto an existing folder
        (tmp / "other.json").write_text("{}")
    assert os.listdir(target) == ["report.json"] and os.listdir(tmp_path) == ["eval"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_outputs_root_follows_ftlab_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("FTLAB_OUTPUTS", raising=False)
    assert str(outputs_root()) == "outputs"
    monkeypatch.setenv("FTLAB_OUTPUTS", str(tmp_path / "elsewhere"))
    assert new_run_dir().parent.parent == tmp_path / "elsewhere"


def test_sqlite_urls_name_their_file():
    assert str(sqlite_file("sqlite:///outputs/optuna.db")) == "outputs/optuna.db"
    assert str(sqlite_file("sqlite:////abs/optuna.db")) == "/abs/optuna.db"
    assert sqlite_file("postgresql://u@h/db") is None


@pytest.mark.process
def test_a_run_and_resume_last_use_the_outputs_root(workdir, tiny):
    elsewhere = {"FTLAB_OUTPUTS": str(workdir / "elsewhere")}
    first = run_cli(*tiny, cwd=workdir, env_extra=elsewhere)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not (workdir / "outputs").exists() and len(list((workdir / "elsewhere").glob("*/*/metrics.json"))) == 1
    resumed = run_cli("resume=last", "trainer.max_steps=6", cwd=workdir, env_extra=elsewhere)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, resumed.stderr[-2000:]
    assert str(workdir / "elsewhere") in resumed.stdout and run_dirs(workdir) == []


@pytest.mark.parametrize(
    "module, args, code",
    [
        ("ftlab.publish", ["nowhere"], 1),
        ("ftlab.infer", ["run=x", "promt=hi"], 2),
        ("ftlab.sweeps", ["report", "--storage", "sqlite:///nothing.db"], 1),
        ("ftlab.preview", ["-n"], 2),
    ],
)
def test_every_command_exits_in_one_line_or_with_the_traceback_when_asked(module, args, code, tmp_path, monkeypatch):
    result = run_cli(*args, cwd=tmp_path, module=module)  # a process of its own: all it imports may print
    assert result.returncode == code and result.stderr.startswith(f"{module}: error: "), result.stderr[-2000:]
    assert result.stderr.count("\n") == 1
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the error itself, raised with its traceback
    main = importlib.import_module(module if module != "ftlab.sweeps" else "ftlab.sweeps.__main__").main
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FtlabError):
        main(list(args))


def test_a_commands_error_stays_one_line_when_a_library_logs_as_it_is_imported():
    # as bitsandbytes does offline on a CPU with AVX512-BF16: kernels' trust check and the missing kernel, two
    # warnings through Python's last-resort handler, which prints to stderr when a library sets up no logging
    code = """if True:
        import logging
        from ftlab.utils.errors import FtlabError, exit_on_error
        with exit_on_error("ftlab.x"):
            logging.getLogger("kernels._internals.hf_hub").warning("Skipping publisher trust check ...")
            logging.getLogger("somelib").error("a library's own error still shows")
            raise FtlabError("bad input")
    """
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "a library's own error still shows\nftlab.x: error: bad input\n"
