"""Real (non-padding) training tokens/s with packing off and on, and the padding share of each, on SmolLM2.

    .venv/bin/python benchmarks/packing.py [--steps 12]

Two datasets: the demo task as shipped (examples of nearly equal length, so little padding to remove), and
the same rows merged into conversations of 1 to 6 questions (mixed lengths, as real chat data has). Each
setting trains the same number of steps with about the same number of real tokens per step: unpacked
batches of 8 examples vs. packed batches of as many rows of up to 512 tokens as hold about the same number
of real tokens (per-step size changes CPU efficiency, which would blur the comparison). From metrics.json:
real tokens/s counts only real tokens over training-step time, leaving out the first steps (warm-up);
padding is the padding share of the batch tensors.
"""

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from ftlab import FineTune, compose
from ftlab.data.batching import pack
from ftlab.data.demo import make_rows
from ftlab.train.callbacks import Throughput

WARMUP = 2  # steps left out of the timing: the first ones pay for allocation and caches


def mixed_lengths(path: Path, seed: int = 0) -> Path:
    """Demo rows merged into conversations of 1-6 question/answer turns, one system prompt each."""
    rows, rng, out = make_rows(500, seed=0), random.Random(seed), []
    while rows:
        n = rng.randint(1, 6)
        take, rows = rows[:n], rows[n:]
        turns = [take[0]["conversations"][0]] + [m for r in take for m in r["conversations"][1:]]
        out.append({"conversations": turns})
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def run(data_path, packing: bool, steps: int, out_dir: Path, batch_size: int) -> dict:
    overrides = [
        f"data.path={data_path}",
        "data.val_size=8",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every_n_steps=1000",
        "data.max_seq_len=512",
        f"data.batch_size={batch_size}",
        f"data.packing={packing}",
    ]
    kept = {}

    class Recipe(FineTune):
        def callbacks(self, run_dir):
            made = super().callbacks(run_dir)
            kept["throughput"] = next(c for c in made if isinstance(c, Throughput))  # its per-step timings
            return made

    result = Recipe(
        compose(overrides), run_dir=out_dir / f"{Path(data_path).stem}-{'packed' if packing else 'padded'}"
    ).run()
    stats = dict(result)
    packed_rows = pack(result.data.prepared.splits["train"].items, 512)
    stats["batch_size"] = batch_size
    measured = kept["throughput"].steps[WARMUP:]
    stats["real_tokens_per_second"] = sum(t for t, _ in measured) / sum(s for _, s in measured)
    stats["tokens_per_packed_row"] = sum(len(r["input_ids"]) for r in packed_rows) / len(packed_rows)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ftlab-bench-"))
    demo = Path(compose([]).data.path)
    results = []
    started = time.perf_counter()
    for name, path in (("demo", demo), ("demo, 1-6 turns", mixed_lengths(work / "mixed.jsonl"))):
        padded = run(path, False, args.steps, work, batch_size=8)
        per_step = padded["tokens_seen"] / args.steps
        rows = max(1, round(per_step / padded["tokens_per_packed_row"]))
        results += [(name, False, padded), (name, True, run(path, True, args.steps, work, batch_size=rows))]
    print(
        f"\n{args.steps} steps per setting (timed: the last {args.steps - WARMUP}), SmolLM2-135M-Instruct, "
        f"LoRA r=16 all-linear, {results[0][2]['precision']}, {time.perf_counter() - started:.0f}s in all\n"
    )
    print("| data | packing | batch | padding | real tokens/step | real tokens/s |")
    print("|---|---|---|---|---|---|")
    for name, packing, r in results:
        batch = f"{r['batch_size']} rows" if packing else f"{r['batch_size']} examples"
        print(
            f"| {name} | {'on' if packing else 'off'} | {batch} | {r['padding_fraction']:.0%} | "
            f"{r['tokens_seen'] / args.steps:.0f} | {r['real_tokens_per_second']:.0f} |"
        )


if __name__ == "__main__":
    main()
