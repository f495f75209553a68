"""A wheel install finds its configs, chat templates and demo data without the source tree (editable installs
are the rest)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_wheel_install_finds_configs_and_assets(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    # packages are found by discovery and data declared: the build warns about neither
    log = built.stdout + built.stderr
    assert not re.findall(r"SetuptoolsDeprecationWarning|is absent from the `packages`|as data is deprecated", log)
    (wheel,) = (tmp_path / "dist").glob("ftlab-*.whl")
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    # the wheel's ftlab comes first on the path, ahead of the editable install of this checkout
    env = dict(os.environ, PYTHONPATH=str(site))

    def python(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True)

    where = python("-c", "import ftlab.config.compose as c; print(c.config_dir())")
    assert where.stdout.strip() == str(site / "ftlab" / "conf"), where.stderr
    cfg = python("-m", "ftlab", "model=llama3", "quant=4bit", "--cfg", "job")
    assert cfg.returncode == 0 and "bits: 4" in cfg.stdout, cfg.stderr
    demo = python("-c", "from ftlab.config.compose import compose; from ftlab.config.checks import validate; "
                  "print(validate(compose([])).data.path)")  # fmt: skip
    assert Path(demo.stdout.strip()) == site / "ftlab" / "assets" / "demo.jsonl"
    assert Path(demo.stdout.strip()).is_file()
    shipped = python("-c", "from ftlab.data import templates; print(templates.shipped(), templates.__file__)")
    assert shipped.stdout.startswith("['chatml', 'gemma', 'llama3', 'mistral'] " + str(site)), shipped.stderr
    check = "from ftlab.use import harness as h, judge as j; print(j.RUBRIC.is_file(), *(p.is_file() for p in "
    check += "(h.SHIPPED / 'ftlab_facts.yaml', h.SHIPPED / 'facts.jsonl')))"
    evaluation = python("-c", check)
    assert evaluation.stdout.split() == ["True"] * 3, evaluation.stderr  # the judge's rubric, the offline benchmark
    sweep = python("-m", "ftlab", "sweep=lora", "--cfg", "hydra")  # the sweep group and the Optuna sweeper plugin
    assert sweep.returncode == 0 and "FtlabOptunaSweeper" in sweep.stdout and "study_name: lora" in sweep.stdout, (
        sweep.stderr
    )


def test_postgresql_tests_skip_without_a_server_and_fail_under_ci(tmp_path):
    """Where no server answers, a PostgreSQL test says why it skipped; under CI=true it fails instead."""
    test = "tests/test_sweeps.py::test_two_workers_share_one_study_on_postgresql"
    root = Path(__file__).resolve().parent.parent
    for ci, outcome in (("", "1 skipped"), ("true", "1 error")):
        env = dict(os.environ, FTLAB_TEST_POSTGRES="postgresql://nobody@127.0.0.1:9/none", CI=ci)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert outcome in result.stdout, result.stdout[-3000:]
        assert "no PostgreSQL server answers at postgresql://nobody@127.0.0.1:9/none" in result.stdout


def test_make_install_takes_a_new_torch_when_TORCH_changes(tmp_path):
    """The Makefile's record of the torch build: the same TORCH leaves the install alone, another one takes the
    installed torch out (so the next pip install brings the one asked for). pip here is a stand-in that logs."""
    import shutil

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    pip = tmp_path / ".venv" / "bin" / "pip"
    pip.parent.mkdir(parents=True)
    pip.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "pip.log"}\n')
    pip.chmod(0o755)

    def spec(torch: str) -> str:
        subprocess.run(["make", "-s", ".venv/.torch", f"TORCH={torch}"], cwd=tmp_path, check=True, capture_output=True)
        log = tmp_path / "pip.log"
        return log.read_text() if log.exists() else ""

    assert spec("torch==2.13.0") == "uninstall --quiet -y torch\n"  # no record yet: what is installed is unknown
    assert spec("torch==2.13.0") == "uninstall --quiet -y torch\n"  # the same TORCH: nothing more
    assert spec("torch") == "uninstall --quiet -y torch\n" * 2  # another build: taken out, to be installed anew
    assert (tmp_path / ".venv" / ".torch").read_text() == "torch\n"
