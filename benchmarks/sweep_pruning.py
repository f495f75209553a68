"""Wall time and best value of the shipped sweep (src/ftlab/conf/sweep/lora.yaml) with pruning on and off, on SmolLM2.

    .venv/bin/python benchmarks/sweep_pruning.py [--trials 6] [--steps 20]

Both searches use the same seed and search space, each in its own study of a fresh SQLite file; the only
difference is hydra.sweeper.pruner.name (median vs none). Trials validate every 5 steps.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(work: Path, pruner: str, trials: int, steps: int) -> tuple:
    import optuna

    storage = f"sqlite:///{work}/sweeps.db"
    name = f"pruner-{pruner}"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ftlab",
            "-m",
            "sweep=lora",
            f"hydra.sweeper.n_trials={trials}",
            f"trainer.max_steps={steps}",
            "trainer.val_every_n_steps=5",
            f"hydra.sweeper.pruner.name={pruner}",
            "hydra.sweeper.pruner.n_warmup_steps=5",
            f"hydra.sweeper.storage={storage}",
            f"hydra.sweeper.study_name={name}",
            f"hydra.sweep.dir={work}/{name}",
        ],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state.name for t in study.trials]
    return wall, study.best_value, states.count("PRUNED"), study.best_trial.params


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ftlab-sweep-bench-"))
    print(f"sweep=lora, {args.trials} trials of {args.steps} steps, TPE seed 42, SmolLM2 on this machine\n")
    print("| pruner | wall time | trials pruned | best val loss | best params |")
    print("|---|---|---|---|---|")
    for pruner in ("none", "median"):
        wall, best, pruned, params = sweep(work, pruner, args.trials, args.steps)
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"| {pruner} | {wall / 60:.1f} min | {pruned} of {args.trials} | {best:.4f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
