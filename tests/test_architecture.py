"""The structure holds: the import-linter contracts pass, and an upward import or a cycle breaks them;
docs/options.md is what the schema generates."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftlab.config import help

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(src))  # ahead of the editable install of this checkout
    return subprocess.run(
        [str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold(tmp_path):
    result = lint_imports(ROOT / "src", tmp_path)
    assert result.returncode == 0 and "0 broken" in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize(
    "module, added, broken",
    [
        ("data/chat.py", "from ftlab.train import recipe", "ftlab.data.chat -> ftlab.train.recipe"),  # upward
        ("utils/files.py", "from ftlab.config import schema", "ftlab.utils.files -> ftlab.config.schema"),  # upward
        ("data/chat.py", "from ftlab.data import cache", "no import cycles"),  # cache imports chat: a cycle
    ],
)
def test_an_upward_import_or_a_cycle_breaks_them(module, added, broken, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    path = src / "ftlab" / module
    path.write_text(path.read_text() + f"\n{added}  # noqa: E402, F401\n")
    result = lint_imports(src, tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout[-3000:]
    assert broken in result.stdout


def test_the_options_reference_is_generated_from_the_schema():
    assert (ROOT / "docs" / "options.md").read_text() == help.options_markdown(), "docs/options.md is stale: make docs"
