"""Wall time of the commands that must stay instant: help, printing the config, rejecting a bad override.

    .venv/bin/python benchmarks/startup.py [--repeat 5]

None of them may import torch or transformers; this prints min and median seconds over the repeats.
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -m ftlab --help": ["--help"],
    "python -m ftlab --cfg job": ["--cfg", "job"],
    "python -m ftlab model=llama3 quant=4bit --cfg job": ["model=llama3", "quant=4bit", "--cfg", "job"],
    "python -m ftlab lora.r=0  (rejected)": ["lora.r=0"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'command':<52} {'min s':>6} {'median s':>9}")
    for name, argv in COMMANDS.items():
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ftlab", *argv], capture_output=True)
            times.append(time.perf_counter() - started)
        print(f"{name:<52} {min(times):>6.2f} {statistics.median(times):>9.2f}")


if __name__ == "__main__":
    main()
