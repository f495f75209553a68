"""A training step against the machine's limit: the matmul roofline, ftlab's real tokens/s and MFU, a plain
PyTorch + PEFT loop on the same batches, peak memory, and (--profile) where a step's time goes.

    .venv/bin/python benchmarks/throughput.py [--steps 14] [--rounds 2] [--baseline GIT_REF] [--ablations]
                                              [--profile] [--json FILE]

- Roofline: a matmul of the model's MLP shape (tokens of a step x hidden @ hidden x intermediate), bf16 and fp32,
  measured before and after the runs, the better of the two.
  The work of a LoRA step per real token is counted from the model's shapes: 4 FLOPs per frozen linear weight
  (forward, and backward to the activations), 6 per adapter weight (also its gradient), 12 x layers x width x
  row length for attention, and 4 x vocabulary x width at each position that predicts a label (the only ones that
  need the head). MFU = that work x real tokens/s / the roofline of the precision the run trains in.
- Settings: the demo data, and the same rows merged into 1-6-turn conversations (mixed lengths), each with packing
  off and on. Packed steps hold about as many real tokens as unpacked ones. Each runs in its own process (so each
  has its own peak memory) as: ftlab (FineTune, Lightning, as `python -m ftlab` trains); plain, a hand-written
  loop of PEFT's defaults for the same LoRA (r 16, alpha 32, dropout 0.05, all linear layers) on ftlab's batches,
  HF's own loss, torch.autocast; and with --baseline REF, ftlab at that git commit.
- Rounds: every setting runs once per round, settings interleaved, so a noisy host affects all alike. A setting's
  tokens/s is the median over its timed steps (all rounds, the first WARMUP steps of each run left out).
- --ablations adds ftlab runs with one fast path switched off each; --profile records torch.profiler over three
  steps of the ftlab and baseline demo runs and sorts their time into kinds of work.
On a GPU (torch.cuda available) the runs train on it and the fast paths (Liger, torch.compile, flash-attention 2
when installed) are added as settings.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WARMUP = 3  # steps of each run left out of the timing: allocation, caches, compilation
PROFILE_STEPS = (4, 7)  # [first, last) step the profiler records
LORA = dict(r=16, alpha=32, dropout=0.05)

# torch.profiler op names sorted into the kinds of work a step does (the profile table of
# docs/contributors/cpu-performance.md)
KINDS = [
    ("matmul", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::linear")),
    ("attention kernel", ("scaled_dot_product", "flash_attention")),
    ("dropout masks", ("aten::bernoulli", "aten::random_", "aten::uniform_", "aten::native_dropout")),
    ("dtype casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous")),
    ("softmax and cross-entropy", ("softmax", "nll_loss", "cross_entropy")),
    (
        "elementwise",
        (
            "aten::mul",
            "aten::add",
            "aten::where",
            "aten::silu",
            "aten::pow",
            "aten::rsqrt",
            "aten::mean",
            "aten::div",
            "aten::sub",
            "aten::neg",
            "aten::cat",
            "aten::sum",
            "aten::fill_",
            "aten::zero_",
            "aten::masked_fill",
            "aten::cos",
            "aten::sin",
            "aten::ge",
            "aten::sqrt",
            "aten::exp",
            "aten::silu_backward",
            "aten::lerp",
            "aten::addcmul",
            "aten::addcdiv",
            "aten::maximum",
        ),
    ),
    ("optimizer step and gradient clipping", ("Optimizer.", "_foreach", "_fused_adam")),
]


# ── one setting, in its own process ────────────────────────────────────────────────────────────────────────
def overrides_of(s: dict, work: Path) -> list:
    o = [
        f"data.path={s['data_path']}",
        f"data.batch_size={s['batch_size']}",
        f"data.packing={s['packing']}",
        "data.max_seq_len=512",
        f"trainer.max_steps={s['steps']}",
        "trainer.checkpoint_every_n_steps=100000",
        f"trainer.accelerator={s['accelerator']}",
        f"cache_dir={work / 'cache'}",
    ]
    return o + s.get("extra", [])


def one_ftlab(s: dict, work: Path) -> dict:
    import lightning as L

    from ftlab import FineTune, compose

    profile = {}

    class Profiled(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, i):
            if s.get("profile") and trainer.global_step == PROFILE_STEPS[0] and "prof" not in profile:
                from torch.profiler import ProfilerActivity
                from torch.profiler import profile as torch_profile

                profile["prof"] = torch_profile(activities=[ProfilerActivity.CPU]).__enter__()

        def on_train_batch_end(self, trainer, module, outputs, batch, i):
            if "prof" in profile and trainer.global_step == PROFILE_STEPS[1] and "kinds" not in profile:
                profile["prof"].__exit__(None, None, None)
                profile["kinds"] = kinds_of(profile["prof"])

    from ftlab.train.callbacks import Throughput

    kept = {}

    class Recipe(FineTune):
        def callbacks(self, run_dir):
            made = super().callbacks(run_dir)
            kept["throughput"] = next(c for c in made if isinstance(c, Throughput))  # its per-step timings
            return made + [Profiled()]

    stats = Recipe(compose(overrides_of(s, work)), run_dir=work / f"run-{s['name']}-{time.time_ns()}").run()
    steps = kept["throughput"].steps[WARMUP:]
    return dict(
        steps=[[t, sec] for t, sec in steps],
        precision=stats["precision"],
        tokens_per_second_fit=stats["tokens_per_second"],
        val_loss_after=stats["val_loss_after"],
        kinds=profile.get("kinds"),
        attention=stats.get("attention"),
        code=str(Path(sys.modules["ftlab"].__file__).parent),
    )


def one_plain(s: dict, work: Path) -> dict:
    """PEFT's defaults in a hand-written loop: what the same LoRA costs without ftlab's step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftlab import FineTune, compose
    from ftlab.model.load import resolve_precision

    ft = FineTune(compose(overrides_of(s, work)))
    batches = ft.prepare_data(ft.load_tokenizer(ft.model_source())).datamodule.train_dataloader()
    precision, _ = resolve_precision("auto", s["accelerator"])
    bf16 = precision.startswith("bf16")
    device = "cuda" if s["accelerator"] == "gpu" else "cpu"
    model = AutoModelForCausalLM.from_pretrained(ft.model_source(), dtype=torch.bfloat16 if bf16 else torch.float32)
    config = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(0)
    model = get_peft_model(model, config).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    steps = []
    for _, batch in zip(range(s["steps"]), batches):
        inputs = (
            {"position_ids": batch["position_ids"]}
            if "position_ids" in batch
            else {"attention_mask": batch["attention_mask"]}
        )
        inputs = {k: v.to(device) for k, v in inputs.items()}
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device), **inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        steps.append([batch["step_tokens"], time.perf_counter() - started])
    return dict(steps=steps[WARMUP:], precision=precision)


def kinds_of(prof) -> dict:
    """Self time (s) per kind of work (KINDS), over the profiled steps."""
    out = {name: 0.0 for name, _ in KINDS}
    out["other"] = 0.0
    for event in prof.key_averages():
        kind = next((name for name, keys in KINDS if any(k in event.key for k in keys)), "other")
        out[kind] += event.self_cpu_time_total / 1e6
    return out


def peak_memory_gb(accelerator: str) -> float:
    if accelerator == "gpu":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ── the machine's limit and the work of a step ─────────────────────────────────────────────────────────────
def roofline(tokens: int, hidden: int, intermediate: int, device: str) -> dict:
    """GFLOP/s of the MLP-shaped matmul, bf16 and fp32: the median of 30 after 5 to warm up."""
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(tokens, hidden, dtype=dtype, device=device)
        b = torch.randn(hidden, intermediate, dtype=dtype, device=device)
        times = []
        for i in range(35):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 5:
                times.append(time.perf_counter() - started)
        out[name] = 2 * tokens * hidden * intermediate / statistics.median(times) / 1e9
    return out


def flops_per_token(config, lora_params: int, mean_row: float, scored_share: float) -> float:
    """The work of a LoRA training step per real token (see the module doc)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    linear = layers * (h * q + 2 * h * kv + q * h + 3 * h * config.intermediate_size)
    attention = 12 * layers * q * mean_row
    head = 4 * config.vocab_size * h * scored_share
    return 4 * linear + 6 * lora_params + attention + head


def lora_param_count(config) -> int:
    h, layers, r = config.hidden_size, config.num_hidden_layers, LORA["r"]
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv, i = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim, config.intermediate_size
    shapes = [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]
    return layers * sum(r * (a + b) for a, b in shapes)


# ── the parent: settings, rounds, tables ────────────────────────────────────────────────────────────────────
def data_settings(work: Path, accelerator: str, steps: int) -> tuple:
    """(settings, facts) for the demo data and its mixed-length variant, packing off and on."""
    sys.path.insert(0, str(Path(__file__).parent))
    from packing import mixed_lengths

    from ftlab import FineTune, compose
    from ftlab.data.batching import pack
    from ftlab.data.kinds import KINDS

    demo = Path(compose([]).data.path)
    settings, facts = [], {}
    for name, path in (("demo", demo), ("mixed 1-6 turns", mixed_lengths(work / "mixed.jsonl"))):
        ft = FineTune(compose([f"data.path={path}", "data.max_seq_len=512", f"cache_dir={work / 'cache'}"]))
        items = ft.tokenize_data(ft.load_tokenizer(ft.model_source())).splits["train"].items
        lengths = [len(x["input_ids"]) for x in items]
        packed = pack(items, 512)
        per_row = sum(len(r["input_ids"]) for r in packed) / len(packed)
        mean = sum(lengths) / len(lengths)
        scored = sum(KINDS.get("tokens").supervised(x) for x in items) / sum(lengths)
        facts[name] = dict(mean_row=mean, scored_share=scored, source=ft.model_source())
        for packing in (False, True):
            batch = 8 if not packing else max(1, round(8 * mean / per_row))
            settings.append(
                dict(
                    data=name,
                    data_path=str(path),
                    packing=packing,
                    batch_size=batch,
                    steps=steps,
                    accelerator=accelerator,
                    mean_row=per_row if packing else mean,
                )
            )
    return settings, facts


def expand(settings: list, baseline: bool, ablations: bool, gpu: bool) -> list:
    out = []
    for s in settings:
        tag = f"{s['data']}, packing {'on' if s['packing'] else 'off'}"
        demo_padded = s["data"] == "demo" and not s["packing"]
        runners = [("ftlab", [])] + ([("baseline", [])] if baseline else []) + [("plain", [])]
        if ablations and demo_padded:
            runners += [
                ("ftlab, lora.dropout=0", ["lora.dropout=0"]),
                ("ftlab, lora.shared_dropout=false", ["lora.shared_dropout=false"]),
                ("ftlab, model.attn_implementation=sdpa", ["model.attn_implementation=sdpa"]),
            ]
        if gpu:  # each fast path whose package is installed
            runners += [("ftlab, trainer.compile=true", ["trainer.compile=true"])]
            if importlib.util.find_spec("liger_kernel"):
                runners += [("ftlab, model.liger_kernels=true", ["model.liger_kernels=true"])]
            if importlib.util.find_spec("flash_attn"):
                runners += [("ftlab, flash_attention_2", ["model.attn_implementation=flash_attention_2"])]
        if ablations and s["data"] != "demo" and not s["packing"]:
            runners += [("ftlab, data.group_by_length=true", ["data.group_by_length=true"])]
        for runner, extra in runners:
            kind = runner.split(",")[0]
            out.append(
                dict(
                    s,
                    name=f"{tag} | {runner}",
                    runner=kind,
                    extra=extra,
                )
            )
    return out


def run_setting(s: dict, work: Path, baseline_src) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTLAB_OUTPUTS": str(work / "outputs")}
    if s["runner"] == "baseline":
        env["PYTHONPATH"] = str(baseline_src)
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(s), "--work", str(work)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{s['name']} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def baseline_tree(ref: str, work: Path) -> Path:
    repo = Path(__file__).resolve().parent.parent
    tree = work / "baseline"
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True
    )
    return tree


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="a git ref whose ftlab runs beside this one (a worktree, removed after)")
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--only", help="run only the settings whose name holds this text")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.one:
        s, work = json.loads(args.one), Path(args.work)
        result = (one_plain if s["runner"] == "plain" else one_ftlab)(s, work)
        result["peak_memory_gb"] = peak_memory_gb(s["accelerator"])
        print("RESULT " + json.dumps(result))
        return

    import torch
    from transformers import AutoConfig

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ftlab-throughput-"))
    gpu = torch.cuda.is_available()
    accelerator = "gpu" if gpu else "cpu"
    settings, facts = data_settings(work, accelerator, args.steps)
    config = AutoConfig.from_pretrained(facts["demo"]["source"])
    limit = roofline(512, config.hidden_size, config.intermediate_size, "cuda" if gpu else "cpu")
    settings = expand(settings, bool(args.baseline), args.ablations, gpu)
    settings = [s for s in settings if not args.only or args.only in s["name"]]
    tree = baseline_tree(args.baseline, work) if args.baseline else None
    results = {s["name"]: [] for s in settings}
    try:
        for r in range(args.rounds):
            for s in settings:
                print(f"round {r + 1}/{args.rounds}: {s['name']}", file=sys.stderr, flush=True)
                results[s["name"]].append(run_setting(s, work, tree / "src" if tree else None))
        # profiled runs are extra and untimed: the profiler slows the steps it records
        for s in settings if args.profile and not gpu else []:
            if s["data"] == "demo" and not s["packing"] and s["runner"] in ("ftlab", "baseline") and not s["extra"]:
                print(f"profile: {s['name']}", file=sys.stderr, flush=True)
                run = run_setting(
                    dict(s, profile=True, steps=PROFILE_STEPS[1] + 1), work, tree / "src" if tree else None
                )
                results[s["name"]][0]["kinds"] = run["kinds"]
    finally:
        if tree:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=Path(__file__).parent, check=False)
    # the limit is what the machine can do: measured again after the runs, the better of the two (a noisy minute on a
    # shared host would otherwise lower the roofline and flatter the MFU)
    again = roofline(512, config.hidden_size, config.intermediate_size, "cuda" if gpu else "cpu")
    limit = {k: max(v, again[k]) for k, v in limit.items()}
    report(settings, results, facts, config, limit, args, time.perf_counter() - started)


def report(settings, results, facts, config, limit, args, seconds) -> None:
    lora = lora_param_count(config)
    rows, figures = [], {"roofline_gflops": limit, "settings": {}}
    plain = {}
    for s in settings:
        runs = results[s["name"]]
        rates = [t / sec for run in runs for t, sec in run["steps"]]
        precision = runs[0]["precision"]
        peak = limit["bf16" if precision.startswith("bf16") else "fp32"]
        work = flops_per_token(config, lora, s["mean_row"], facts[s["data"]]["scored_share"])
        rate = statistics.median(rates)
        f = dict(
            tokens_per_second=rate,
            mfu=work * rate / (peak * 1e9),
            precision=precision,
            peak_memory_gb=max(run["peak_memory_gb"] for run in runs),
            gflop_per_token=work / 1e9,
            kinds=runs[0].get("kinds"),
            attention=runs[0].get("attention"),
        )
        figures["settings"][s["name"]] = f
        if s["runner"] == "plain":
            plain[(s["data"], s["packing"])] = rate
        rows.append((s, f))
    print(
        f"\n{args.rounds} round(s) of {args.steps} steps per setting (median over the last {args.steps - WARMUP} of "
        f"each run), {time.strftime('%Y-%m-%d')}, {seconds / 60:.0f} min in all\n"
    )
    print(
        f"matmul roofline ({512}x{config.hidden_size} @ {config.hidden_size}x{config.intermediate_size}): "
        f"bf16 {limit['bf16']:.0f} GFLOP/s, fp32 {limit['fp32']:.0f} GFLOP/s\n"
    )
    print("| data | packing | run | real tokens/s | MFU | vs plain loop | peak memory (GB) |")
    print("|---|---|---|---|---|---|---|")
    for s, f in rows:
        base = plain.get((s["data"], s["packing"]))  # None when --only left the plain loop out
        runner, rate = s["name"].split(" | ")[1], f["tokens_per_second"]
        print(
            f"| {s['data']} | {'on' if s['packing'] else 'off'} | {runner} | {rate:.0f} | "
            f"{f['mfu']:.0%} | {f'{rate / base:.2f}x' if base else '-'} | {f['peak_memory_gb']:.2f} |"
        )
    profiled = [(s["name"].split(" | ")[1], f["kinds"]) for s, f in rows if f.get("kinds")]
    if profiled:
        print(
            "\nwhere a demo step's time goes (torch.profiler self time, steps "
            f"{PROFILE_STEPS[0]}-{PROFILE_STEPS[1] - 1}, per step)\n"
        )
        print("| kind of work | " + " | ".join(name for name, _ in profiled) + " |")
        print("|---|" + "---|" * len(profiled))
        steps = PROFILE_STEPS[1] - PROFILE_STEPS[0]
        for kind in [k for k, _ in KINDS] + ["other"]:
            cells = []
            for _, kinds in profiled:
                total = sum(kinds.values())
                cells.append(f"{kinds[kind] / steps:.2f} s ({kinds[kind] / total:.0%})")
            print(f"| {kind} | " + " | ".join(cells) + " |")
        print("| total | " + " | ".join(f"{sum(k.values()) / steps:.2f} s" for _, k in profiled) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
