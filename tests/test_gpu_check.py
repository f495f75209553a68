"""make gpu-check, off a GPU: its command lines compose (the ftlab run validates, the benchmark's flags parse, the
gpu marker selects tests), and it refuses in one line to report a GPU path that cannot run here."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ftlab.config.checks import validate
from ftlab.config.compose import compose

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402
import throughput  # noqa: E402


@pytest.mark.process
def test_its_command_lines_compose(tmp_path):
    (tests, _), (fsdp, metrics), (bench, figures) = [(c, f) for _, c, f in gpu_check.steps(tmp_path, 2, 8)]
    ftlab_args = [a for a in fsdp[3:] if not a.startswith("hydra.")]  # after: python -m ftlab
    cfg = validate(compose(ftlab_args))
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.quant.bits) == ("fsdp", 2, 4)
    assert metrics == tmp_path / "fsdp-qlora" / "metrics.json" and f"hydra.run.dir={metrics.parent}" in fsdp
    args = throughput.parser().parse_args(bench[2:])  # after: python benchmarks/throughput.py
    assert (args.steps, args.rounds, args.only, args.json) == (8, 1, "demo, packing off", str(figures))
    assert tests[-1] == "tests" and tests[3:5] == ["-m", "gpu"]  # after: python -m pytest
    collected = subprocess.run(  # the marker's tests, as the check's pytest selects them (the file alone: faster)
        [sys.executable, "-m", "pytest", "--collect-only", *tests[3:-2], "tests/test_gpu.py"],
        cwd=BENCHMARKS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0 and "test_gpu.py::test_tiny_trains_on_the_gpu[4bit]" in collected.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="off a GPU only")
def test_off_a_gpu_it_says_so_and_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--out", str(tmp_path / "figures.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and not (tmp_path / "figures.json").exists()
    assert result.stdout.strip().splitlines() == [
        "gpu-check: no CUDA GPU here (torch.cuda.is_available() is false); run it on a machine with one"
    ]
