"""The two CPU kernels behind ftlab's defaults, timed alone in bfloat16: attention forward + backward, eager vs
SDPA, by row length (model.attn_implementation=auto); and a LoRA dropout mask, torch's vs SharedDropout's.

    .venv/bin/python benchmarks/kernels_cpu.py

Shapes are SmolLM2's: 9 heads of 64, and about 512 tokens per batch (8 rows of 64, 4 of 128 ...). Each figure is
the median of 10 calls after 2 to warm up.
"""

import statistics
import time

import torch
import torch.nn.functional as F

from ftlab.model.dropout import SharedDropout


def median_ms(f, calls: int = 10) -> float:
    for _ in range(2):
        f()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        f()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def attention(rows: int, length: int, kind: str) -> float:
    bf16 = torch.bfloat16
    q, k, v = (torch.randn(rows, 9, length, 64, dtype=bf16, requires_grad=True) for _ in range(3))
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None, None].expand(rows, 1, length, length)

    def step():
        if kind == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal)
        else:  # what transformers' eager attention computes: scores, mask, softmax in float32, weighted values
            scores = (q @ k.transpose(-1, -2) / 8.0).masked_fill(~causal, float("-inf"))
            out = torch.softmax(scores.float(), -1).to(bf16) @ v
        out.sum().backward()

    return median_ms(step)


def main() -> None:
    torch.manual_seed(0)
    print("attention, forward + backward (ms)\n")
    print("| rows x tokens | eager | sdpa | faster |")
    print("|---|---|---|---|")
    for rows, length in ((8, 64), (8, 96), (4, 128), (4, 192), (2, 256), (1, 512), (1, 1024)):
        eager, sdpa = attention(rows, length, "eager"), attention(rows, length, "sdpa")
        print(f"| {rows} x {length} | {eager:.1f} | {sdpa:.1f} | {'eager' if eager < sdpa else 'sdpa'} |")
    print("\nLoRA dropout at p=0.05 on one projection's input, bfloat16 (ms)\n")
    print("| input | torch.nn.Dropout | SharedDropout |")
    print("|---|---|---|")
    for shape in ((8, 64, 576), (8, 64, 1536)):
        x = torch.randn(shape, dtype=torch.bfloat16)
        cells = [median_ms(lambda d=d, x=x: d(x), 50) for d in (torch.nn.Dropout(0.05), SharedDropout(0.05))]
        print(f"| {' x '.join(map(str, shape))} | {cells[0]:.2f} | {cells[1]:.2f} |")


if __name__ == "__main__":
    main()
