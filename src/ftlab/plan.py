"""`python -m ftlab.plan [run overrides] [plan.device_memory=80GB]`: will this run fit, before weights are downloaded
or a GPU is rented?

It builds the configured model from its config alone and traces real training steps of it on fake tensors
(train/plan.py): the peak memory per device, split into weights, adapter and gradients, optimizer state,
activations and logits; the largest micro-batch and the longest sequence that fit plan.device_memory; and what
gradient checkpointing, 4-bit, FSDP and packing would change. It writes nothing.
"""

import sys
from typing import List, Optional

from ftlab.config.schema import PlanCommand
from ftlab.utils.console import Stages, info, log, setup_logging

PROG = "ftlab.plan"
SUMMARY = "the memory a run needs per device, from one training step traced on fake tensors"
ROWS = [
    ("weights", ("weights",)),
    ("adapter + gradients", ("adapter", "gradients")),
    ("optimizer state", ("optimizer",)),
    ("activations", ("activations",)),
    ("logits + loss", ("logits",)),
]


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def plan(options: PlanCommand, overrides: List[str]) -> dict:
    """Print the plan; return its figures (bytes): peak, split, usable, largest_batch, longest_seq, switches."""
    from ftlab.config.checks import validate
    from ftlab.config.compose import compose
    from ftlab.train import limits
    from ftlab.train import plan as traced

    setup_logging()
    cfg = validate(compose(overrides))
    p, d, t = options.plan, cfg.data, cfg.trainer
    device = limits.parse_size(p.device_memory)
    usable = int(device * (1 - p.headroom))
    devices = t.devices * t.num_nodes
    stages = Stages(["Building the model from its config", "Tracing a training step", "Finding the limits"])
    shape = f"micro-batch {d.batch_size} x {d.max_seq_len} tokens"

    stages.start(stages.names[0], f"({cfg.model.name})")
    model = traced.build(cfg)
    s = model.setup
    info(f"config: {s.config_from}")
    info(
        f"{s.total / 1e9:.2f}B parameters, {s.trainable / 1e6:.1f}M trainable (LoRA r={cfg.lora.r}); "
        f"{_quant(cfg)}; {s.precision}; {s.attention} attention"
    )

    total = limits.device_peak(cfg, s)
    stages.start(stages.names[1], f"({shape})")
    main = model.trace(d.batch_size, d.max_seq_len)
    split = limits.per_device(main, cfg, s)
    peak = sum(split.values())
    where = (
        f"{t.strategy if t.strategy not in (None, 'auto') else 'one process'}, {devices} device{'s' * (devices > 1)}"
    )
    info(f"peak per device: {gib(peak)} ({where})")
    for label, keys in ROWS:
        part = sum(split[k] for k in keys)
        info(f"  {label:<20} {gib(part):>11}  {100 * part / max(peak, 1):3.0f}%")
    if t.strategy == "ddp" and devices > 1:
        info("  (gradients include DDP's all-reduce buckets, a second copy of them)")
    if t.strategy == "fsdp":
        info(f"  (FSDP: sharded over {devices} devices and one decoder layer gathered, figured from the traced step)")
    fits = peak <= usable
    info(
        f"device: plan.device_memory={p.device_memory} less {p.headroom:.0%} headroom = {gib(usable)} usable: "
        + ("fits" if fits else f"does NOT fit; {gib(peak - usable)} over")
    )

    if p.check:
        _, measured = traced.measure(cfg, d.batch_size, d.max_seq_len)
        info(f"the same step on this GPU: torch.cuda.max_memory_allocated {gib(measured)} (planned {gib(main.peak)})")
    stages.start(stages.names[2], f"(within {gib(usable)})")
    batch = limits.largest_batch(model, d.max_seq_len, usable, total)
    seq = limits.longest_sequence(model, d.batch_size, d.max_seq_len, usable, total)
    info(f"largest micro-batch at {d.max_seq_len} tokens: {batch or 'none fits'}")
    info(f"longest sequence at micro-batch {d.batch_size}: {f'{seq} tokens' if seq else 'none fits'}")
    result = {"peak": peak, "split": split, "usable": usable, "largest_batch": batch, "longest_seq": seq}
    result["switches"] = _switches(cfg, overrides, usable, peak) if p.switches else {}
    stages.finish()
    return result


def _quant(cfg) -> str:
    q = cfg.quant
    return f"4-bit {q.quant_type}" if q.bits == 4 else f"{q.bits}-bit" if q.bits else "no quantization"


def _switches(cfg, overrides: List[str], usable: int, peak: int) -> dict:
    """{override: (peak per device, largest micro-batch)} of each switch the config doesn't use yet, each traced."""
    from ftlab.config.checks import validate
    from ftlab.config.compose import compose
    from ftlab.train import limits
    from ftlab.train import plan as traced

    d, t = cfg.data, cfg.trainer
    switches = [f"model.gradient_checkpointing={str(not cfg.model.gradient_checkpointing).lower()}"]
    switches.append("quant=none" if cfg.quant.bits == 4 else "quant=4bit")
    devices = max(2, t.devices * t.num_nodes)
    if t.accelerator == "gpu" and t.strategy != "fsdp":
        switches.append(f"trainer=fsdp trainer.devices={devices}")
    log.info("\nwhat each switch changes (traced the same way):")
    out = {}
    for switch in switches:
        variant = validate(compose(overrides + switch.split()))
        model = traced.build(variant)
        total = limits.device_peak(variant, model.setup)
        new = total(model.trace(d.batch_size, d.max_seq_len))
        batch = limits.largest_batch(model, d.max_seq_len, usable, total)
        out[switch] = (new, batch)
        change = f"{'+' if new >= peak else '-'}{gib(abs(new - peak))}"
        info(f"{switch:<44} peak {gib(new):>10} ({change}), largest micro-batch {batch or 'none fits'}")
    fitting = [s for s, (new, _) in out.items() if new <= usable]
    if peak > usable:
        info(f"to fit {gib(usable)}: {' or '.join(fitting)}" if fitting else "no switch alone fits it")
    packing = "data.packing=true" if not d.packing else "data.packing=false"
    info(f"{packing:<44} the same peak: the plan's rows are full already; packed, every row is (fewer steps)")
    return out


def main(argv: Optional[List[str]] = None) -> None:
    from ftlab.config.help import option_lines
    from ftlab.config.overrides import parse
    from ftlab.utils.errors import exit_on_error

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(f"{PROG}: {SUMMARY}\n\nusage: python -m {PROG} [run config key=value ...] [plan.option=value ...]\n")
        print("options:\n" + "\n".join(option_lines(PlanCommand)))
        print("\nrun config keys are those of training (python -m ftlab --help), e.g. model=llama3 quant=4bit")
        return
    with exit_on_error(PROG):
        plan(*parse(argv, PlanCommand))


if __name__ == "__main__":
    main()
