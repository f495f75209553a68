"""What the rewards make of the starting model's own answers, before a run is paid for (python -m ftlab.preview
method=grpo): a group of completions per prompt, sampled as training samples them, each function's score per
completion, and per function the mean, how often it applies and how often a whole group scores alike (such a
group teaches nothing)."""

from typing import List

import torch

from ftlab.data import chat
from ftlab.data.kinds import KINDS
from ftlab.methods.grpo import loss as objective
from ftlab.methods.grpo import rollout
from ftlab.methods.grpo.step import ZERO_STD, applied_mean, score_completions


def lines(options, model, tokenizer, examples: List[dict], seed: int) -> List[str]:
    """The report, a line each: the prompts with their scored completions, then the summary."""
    group = options.num_generations
    batch = KINDS.get("prompt").collate(examples, tokenizer.pad_token_id)
    rows = batch["rows"]
    seeds = [rollout.stream_seed(seed, rollout.row_identity(row), 0, j) for row in rows for j in range(group)]
    model.eval()
    model.config.use_cache = True
    with torch.no_grad():
        out = rollout.generate(
            model, batch, group=group, seeds=seeds, options=options, stop_ids=chat.stop_ids(tokenizer),
            pad_id=tokenizer.pad_token_id,
        )  # fmt: skip
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out.completion_ids]
    scores, total = score_completions(options, rows, texts, out.completion_ids, group)
    _, std = objective.advantages(torch.tensor(total), group, scale=False)
    report = [f"\n{group} completions per prompt, sampled from the starting model as training samples them:"]
    for i, row in enumerate(rows):
        reference = f"; reference: {row['reference']!r}" if row["reference"] is not None else ""
        prompt = tokenizer.decode(examples[i]["input_ids"])
        report.append(f"\n── prompt {i + 1} ({row['where']}){reference} ──\n{prompt}")
        for j in range(i * group, (i + 1) * group):
            each = ", ".join(f"{name} {_shown(values[j])}" for name, values in scores.items())
            cut = " [truncated]" if out.truncated[j] else ""
            report.append(f"  reward {total[j]:.3f} ({each}){cut}: {texts[j]!r}")
    report.append("\nper reward function, over every completion above:")
    for name, values in scores.items():
        mean, applied = applied_mean(values), sum(v is not None for v in values)
        flat = sum(_flat(values[k : k + group]) for k in range(0, len(values), group))
        report.append(
            f"  {name}: mean {float('nan') if mean is None else mean:.3f}, applies to {applied}/{len(values)}, "
            f"{flat}/{len(rows)} groups score all alike"
        )
    flat_total = int((std < ZERO_STD).sum())
    report.append(
        f"  the weighted reward: mean {sum(total) / len(total):.3f}; {flat_total}/{len(rows)} groups "
        f"({100 * flat_total / len(rows):.0f}%) have one reward for all their completions and teach nothing; "
        f"{int(out.truncated.sum())}/{len(texts)} completions truncated at method.max_completion_length"
    )
    return report


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _flat(values: list) -> bool:
    applied = [v for v in values if v is not None]
    return not applied or max(applied) - min(applied) < ZERO_STD
