"""GRPO's sampling against the floor, and a GRPO step's time split, on SmolLM2-135M-Instruct.

    .venv/bin/python benchmarks/grpo_step.py [--prompts 4] [--group 4] [--length 32] [--rounds 3] [--steps 4]
                                             [--json FILE]

- Sampling: `prompts` demo prompts x `group` completions of exactly `length` tokens each (no stop token ends one
  early, so every setting does the same work). The floor is what tools without vLLM do: transformers' `generate`
  with do_sample=True on the unmerged PEFT model, every completion's prompt in the batch. ftlab's rollout
  (methods/grpo/rollout.py) is timed as training runs it (adapter folded into a copy of the weights, each prompt's
  cache computed once for its group, per-completion seeded streams) and with each of those switched off. The
  adapter is a trained-looking one (B drawn at random, so folding it changes the weights). Each setting runs
  `rounds` times, interleaved; its time is the median. Generated tokens/s = prompts x group x length / seconds.
- Step: a real `python -m ftlab method=grpo` run of `steps` steps on the demo data (the exact-match reward), whose
  metrics.json gives the training tokens/s (prompt and completion tokens, time spent generating left out), the
  generation tokens/s, the share of the step spent generating and the peak memory (ru_maxrss of the process).
"""

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ftlab import FineTune, compose
from ftlab.data import chat
from ftlab.methods.grpo import rollout


class Options:
    temperature, top_k, top_p = 1.0, 0, 1.0

    def __init__(self, length: int):
        self.max_completion_length = length


def load(cache_dir: str):
    ft = FineTune(compose(["method=grpo", f"cache_dir={cache_dir}"]))
    source = ft.model_source()
    tokenizer = ft.load_tokenizer(source)
    model = ft.get_peft_model(ft.load_base_model(source, "eager"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)  # a trained adapter is not zero: folding it must do real work
    model.eval()
    model.config.use_cache = True
    return ft, tokenizer, model


def prompts(ft, tokenizer, n: int) -> dict:
    rows = [json.loads(x) for x in Path(ft.cfg.data.path).read_text().splitlines()[:n]]
    ids = [chat.prompt_ids(tokenizer, r["conversations"][:-1], "demo", "assistant")[1] for r in rows]
    width = max(map(len, ids))
    return {
        "input_ids": torch.tensor([[tokenizer.pad_token_id] * (width - len(x)) + x for x in ids]),
        "attention_mask": torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids]),
    }


def floor(model, tokenizer, batch: dict, group: int, length: int) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(
            input_ids=batch["input_ids"].repeat_interleave(group, 0),
            attention_mask=batch["attention_mask"].repeat_interleave(group, 0),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=length,
            min_new_tokens=length,
            pad_token_id=tokenizer.pad_token_id,
        )
    return time.perf_counter() - started


def ours(model, batch: dict, group: int, length: int, merge: bool, share: bool) -> float:
    seeds = [rollout.stream_seed(0, str(i), 0, j) for i in range(len(batch["input_ids"])) for j in range(group)]
    started = time.perf_counter()
    weights = rollout.merged(model) if merge else nullcontext(model)
    with torch.no_grad(), weights as m:
        rollout.generate(
            m, batch, group=group, seeds=seeds, options=Options(length), stop_ids=[-1], pad_id=0, share_prompts=share
        )
    return time.perf_counter() - started


def step_figures(cache_dir: str, steps: int, prompts_n: int, group: int, length: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        over = [
            "method=grpo",
            "method.rewards=[{fn:exact_match}]",
            f"method.num_generations={group}",
            f"method.max_completion_length={length}",
            f"data.batch_size={prompts_n}",
            f"trainer.max_steps={steps}",
            "trainer.val_every_n_steps=0",
            "data.val_size=4",
            f"cache_dir={cache_dir}",
        ]
        result = FineTune(compose(over), run_dir=Path(tmp) / "run").run()
    fit = result["train_seconds"]
    generating = result["generation_seconds"]
    return {
        "train_tokens_per_second": result["tokens_per_second"],
        "generation_tokens_per_second": round(result["generated_tokens"] / generating, 1),
        "generation_share_of_step": round(generating / fit, 3),
        "steps": result["steps"],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "ftlab"))
    parser.add_argument("--json")
    a = parser.parse_args()
    ft, tokenizer, model = load(a.cache_dir)
    batch = prompts(ft, tokenizer, a.prompts)
    settings = {
        "floor: generate, unmerged PEFT": lambda: floor(model, tokenizer, batch, a.group, a.length),
        "ftlab rollout": lambda: ours(model, batch, a.group, a.length, merge=True, share=True),
        "ftlab, adapter not folded": lambda: ours(model, batch, a.group, a.length, merge=False, share=True),
        "ftlab, prompt read per completion": lambda: ours(model, batch, a.group, a.length, merge=True, share=False),
    }
    times = {name: [] for name in settings}
    for run in settings.values():  # warm-up
        run()
    for _ in range(a.rounds):
        for name, run in settings.items():
            times[name].append(run())
    tokens = a.prompts * a.group * a.length
    base = statistics.median(times["floor: generate, unmerged PEFT"])
    rows = {}
    print(f"{a.prompts} prompts x {a.group} completions x {a.length} tokens, {torch.get_num_threads()} threads")
    for name, seen in times.items():
        t = statistics.median(seen)
        rows[name] = {"seconds": round(t, 3), "tokens_per_second": round(tokens / t, 1), "vs_floor": round(base / t, 2)}
        print(f"  {name:36s} {t:7.2f} s  {tokens / t:7.1f} tok/s  {base / t:5.2f}x the floor")
    step = step_figures(a.cache_dir, a.steps, a.prompts, a.group, a.length)
    print(f"  a GRPO step: {json.dumps(step)}")
    if a.json:
        Path(a.json).write_text(json.dumps({"sampling": rows, "step": step, "argv": sys.argv[1:]}, indent=2))


if __name__ == "__main__":
    main()
