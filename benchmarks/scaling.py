"""Training tokens/s and peak memory per rank at 1 and more processes, with the same global batch.

    .venv/bin/python benchmarks/scaling.py [--model smollm2|tiny] [--steps 10] [--ranks 1,2] [--strategies ddp]
    # on a GPU machine, after `make install TORCH=torch`:
    .venv/bin/python benchmarks/scaling.py --accelerator gpu --ranks 1,2,4,8 --strategies ddp,fsdp

Each setting is one `python -m ftlab` run, as a user starts it: N processes of data.batch_size = B / N each, so
every setting takes the same optimizer steps on the same examples (the losses agree; tests/test_distributed.py).
Tokens/s is real (non-padding) tokens of all ranks over training time (metrics.json: tokens_per_second); peak
memory is each rank's (GPU memory allocated, or the process's resident set on CPU: peak_memory_gb_per_rank).
On a 2-core CPU, two processes share the cores one process already used: expect no speed-up, only the cost of
the extra process and the all-reduce.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "smollm2": [],  # the shipped default: SmolLM2-135M-Instruct on the demo data
    "tiny": ["model=tiny"],
}


def run(work: Path, model: str, ranks: int, strategy: str, accelerator: str, steps: int, batch: int) -> dict:
    run_dir = work / f"{model}-{strategy}-{ranks}"
    overrides = MODELS[model] + [
        f"trainer.accelerator={accelerator}",
        f"trainer.devices={ranks}",
        f"trainer.strategy={strategy if ranks > 1 or strategy == 'fsdp' else 'auto'}",
        f"data.batch_size={batch // ranks}",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every_n_steps=100000",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ftlab", *overrides], cwd=work, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="global batch: examples per optimizer step")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--strategies", default="ddp")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    args = parser.parse_args()
    print(f"{args.model}, {args.steps} steps of {args.batch} examples, {args.accelerator}\n")
    print("| strategy | processes | batch per rank | tokens/s | train s | val loss after | peak memory per rank (GB) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            for ranks in (int(r) for r in args.ranks.split(",")):
                m = run(Path(tmp), args.model, ranks, strategy, args.accelerator, args.steps, args.batch)
                memory = ", ".join(f"{x:.2f}" for x in m["peak_memory_gb_per_rank"])
                print(
                    f"| {strategy} | {ranks} | {args.batch // ranks} | {m['tokens_per_second']:.0f} | "
                    f"{m['train_seconds']:.1f} | {m['val_loss_after']:.4f} | {memory} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
