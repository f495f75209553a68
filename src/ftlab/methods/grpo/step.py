"""One GRPO micro-batch: sample, score, compare within each group, and the clipped objective's loss, with the
sums the step logs (reward per function, KL, clipping, lengths, zero-std groups, generation speed)."""

import functools
import json
import math
from contextlib import nullcontext
from pathlib import Path

import torch

from ftlab.methods.grpo import loss as objective
from ftlab.methods.grpo import rewards, rollout

ZERO_STD = 1e-6  # a group whose rewards differ by less has nothing to compare


@functools.lru_cache(maxsize=8)
def _resolved(spec: str) -> list:
    return rewards.resolve(json.loads(spec))


def resolved(options) -> list:
    """The rewards of method.rewards, imported once per process."""
    return _resolved(json.dumps(rewards.entries(options.rewards), sort_keys=True, default=str))


def reward_inputs(rows: list, texts: list, group: int) -> tuple:
    """(prompts, completions, columns) as a TRL reward function takes them, one entry per completion: text where the
    rows' prompts are text, messages where they are messages; every column (reference included) by name."""
    chat = isinstance(rows[0]["prompt"], list)
    prompts = [row["prompt"] for row in rows for _ in range(group)]
    completions = [[{"role": "assistant", "content": t}] if chat else t for t in texts]
    names = sorted({k for row in rows for k in row["columns"]})
    columns = {k: [row["columns"].get(k) for row in rows for _ in range(group)] for k in names}
    if any(row["reference"] is not None for row in rows):
        columns["reference"] = [row["reference"] for row in rows for _ in range(group)]
    return prompts, completions, columns


def score_completions(options, rows: list, texts: list, ids: list, group: int) -> tuple:
    """({function name: [float or None per completion]}, [weighted reward per completion]) of `group` completions per
    row, in group order (`ids`: their tokens)."""
    prompts, completions, columns = reward_inputs(rows, texts, group)
    where = [row["where"] for row in rows for _ in range(group)]
    fns = resolved(options)
    scores = rewards.score(fns, prompts, completions, ids, columns, where)
    return scores, rewards.weighted(fns, scores)


def applied_mean(values: list):
    """The mean of the values a function gave (None where it does not apply); None when it applied to none."""
    applied = [v for v in values if v is not None]
    return sum(applied) / len(applied) if applied else None


def sampling_weights(model, options):
    return rollout.merged(model) if options.merge_for_sampling else nullcontext(model)


def sample(options, forward, rows: list, batch: dict) -> dict:
    """The group of completions of each prompt, scored: what every pass over this micro-batch learns from (plain
    values only: a checkpoint taken between passes keeps it)."""
    group = options.num_generations
    step = forward.module.trainer.global_step
    identities = [rollout.row_identity(row) for row in rows]
    seeds = [rollout.stream_seed(forward.seed, row, step, j) for row in identities for j in range(group)]
    with forward.generating() as model, sampling_weights(model, options) as sampler:
        out = rollout.generate(
            sampler,
            batch,
            group=group,
            seeds=seeds,
            options=options,
            stop_ids=forward.stop_ids,
            pad_id=forward.pad_id,
        )
    texts = [forward.decode(ids) for ids in out.completion_ids]
    scores, weighted = score_completions(options, rows, texts, out.completion_ids, group)
    total = torch.tensor(weighted, dtype=torch.float32)
    advantage, std = objective.advantages(total, group, options.scale_rewards)
    return {
        "scored": {"input_ids": out.input_ids, "attention_mask": out.attention_mask, "labels": out.labels},
        "truncated": out.truncated,
        "lengths": [len(ids) for ids in out.completion_ids],
        "texts": texts,
        "scores": scores,
        "total": total,
        "advantage": advantage,
        "flat": std < ZERO_STD,
        "seconds": out.seconds,
        "old_logps": None,
    }


def loss_mask(mask, truncated, flat, group: int, options):
    """The completion tokens the loss covers: all of them, less the truncated completions' (mask_truncated) and
    the groups' that scored all alike (filter_zero_std). mask [completions, positions]; truncated [completions];
    flat [groups]."""
    mask = mask.clone()
    if options.mask_truncated:
        mask &= ~truncated.to(mask.device).unsqueeze(1)
    if options.filter_zero_std:
        mask &= ~flat.repeat_interleave(group).to(mask.device).unsqueeze(1)
    return mask


def loss(options, forward, batch: dict):
    module = forward.module
    rows = batch["rows"]
    training = "step_units" in batch  # validation batches score alone, with no step to share a normaliser with
    if not any(rows):  # a filler: this rank has no share of a short last batch, but DDP needs its backward pass
        if training and (options.filter_zero_std or options.loss_type == "dapo"):
            forward.all_ranks_sum([0.0, 0.0])  # the collective the other ranks make
        nothing = module.model(input_ids=batch["input_ids"]).logits.sum() * 0.0
        return nothing, empty_sums(options)
    group = options.num_generations
    # passes > 1: the first pass over a micro-batch samples; the next ones learn from the same completions, against
    # the probabilities they were sampled with (kept with them)
    key = "|".join(row["where"] for row in rows)
    repeat = int(batch.get("step_repeat", 0))
    fresh = not training or repeat == 0 or key not in forward.carry
    got = sample(options, forward, rows, batch) if fresh else forward.carry[key]
    scored, flat = got["scored"], got["flat"]
    logps, mask = forward.token_logps(scored)
    if got["old_logps"] is None:
        got["old_logps"] = logps.detach()  # sampled by these very weights
    if training and options.passes > 1:
        if repeat < options.passes - 1:
            forward.carry[key] = got
        else:
            forward.carry.pop(key, None)
    mask = loss_mask(mask, got["truncated"], flat, group, options)
    ref = forward.token_logps(scored, reference=True)[0] if options.beta else None
    prompts_step = max(int(batch["step_units"]), 1) if training else len(rows)  # the step's, on every rank
    totals = objective.Totals(completions=prompts_step * group)
    if training and (options.filter_zero_std or options.loss_type == "dapo"):  # known now: one collective
        kept = float((~flat).sum()) if options.filter_zero_std else float(len(rows))
        counts = forward.all_ranks_sum([kept, float(mask.sum())])
        totals = objective.Totals(completions=max(counts[0], 1.0) * group, tokens=counts[1])
    value, stats = objective.objective(
        logps,
        got["old_logps"],
        got["advantage"].to(logps.device),
        mask,
        loss_type=options.loss_type,
        level=options.importance_sampling_level,
        eps_low=options.epsilon,
        eps_high=options.epsilon_high,
        beta=options.beta,
        ref_logps=ref,
        max_length=options.max_completion_length,
        totals=totals,
    )
    lengths, total, texts = got["lengths"], got["total"], got["texts"]
    sums = {
        "loss": value.detach() * prompts_step,
        "units": len(rows),
        "completions": len(texts),
        "reward": float(total.sum()),
        "reward_sq": float((total**2).sum()),
        "kl": stats["kl"],
        "clipped": stats["clipped"],
        "tokens": stats["tokens"],
        "length": sum(lengths),
        "max_length": max(lengths),
        "truncated": float(got["truncated"].sum()),
        "groups": len(rows),
        "zero_std": float(flat.sum()),
        "generated": sum(lengths) if fresh else 0,
        "generation_seconds": got["seconds"] if fresh else 0.0,
        "trained_tokens": float(scored["attention_mask"].sum()),
    }
    for name, values in got["scores"].items():
        applied = [v for v in values if v is not None]
        sums[f"fn_{name}"], sums[f"fn_{name}_n"] = sum(applied), len(applied)
    step = module.trainer.global_step
    if training and fresh and options.samples_every and (step + 1) % options.samples_every == 0 and forward.is_main:
        write_samples(forward.run_dir, step + 1, rows, texts, group, got["scores"], total.tolist())
    return value * prompts_step, sums


SUMS = (
    "loss units completions reward reward_sq kl clipped tokens length max_length truncated groups zero_std "
    "generated generation_seconds trained_tokens"
).split()


def empty_sums(options) -> dict:
    """Every sum a micro-batch reports, at zero: each rank reports the same names (one collective adds them)."""
    out = dict.fromkeys(SUMS, 0.0)
    for reward in resolved(options):
        out[f"fn_{reward.name}"] = out[f"fn_{reward.name}_n"] = 0.0
    return out


def ratios(sums: dict) -> dict:
    n = max(sums.get("completions", 0), 1)
    mean = sums.get("reward", 0.0) / n
    variance = max(sums.get("reward_sq", 0.0) / n - mean**2, 0.0)
    out = {
        "loss": sums["loss"] / max(sums["units"], 1),
        "reward": mean,
        "reward_std": math.sqrt(variance),
        "kl": sums.get("kl", 0.0) / max(sums.get("tokens", 0), 1),
        "clip_fraction": sums.get("clipped", 0.0) / max(sums.get("tokens", 0), 1),
        "completion_length": sums.get("length", 0) / n,
        "completion_length_max": sums.get("max_length", 0),
        "truncated": sums.get("truncated", 0) / n,
        "zero_std_groups": sums.get("zero_std", 0) / max(sums.get("groups", 0), 1),
    }
    if sums.get("generation_seconds"):  # a pass over completions sampled before generates nothing
        out["generation_tok_s"] = sums["generated"] / sums["generation_seconds"]
    for key in sums:
        if key.startswith("fn_") and not key.endswith("_n"):
            out[f"reward_{key[3:]}"] = sums[key] / max(sums.get(f"{key}_n", 0), 1)
    return out


def write_samples(run_dir: Path, step: int, rows: list, texts: list, group: int, scores: dict, total: list) -> None:
    """The step's prompts, completions and rewards, one line per completion, appended to samples/step-N.jsonl."""
    folder = Path(run_dir) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"step-{step:06d}.jsonl", "a", encoding="utf-8") as f:
        for j, text in enumerate(texts):
            row = rows[j // group]
            line = {
                "step": step,
                "where": row["where"],
                "prompt": row["prompt"],
                "reference": row["reference"],
                "completion": text,
                "reward": total[j],
                "rewards": {name: values[j] for name, values in scores.items()},
            }
            f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")


def evaluation_scores(options, answers: list, examples: list) -> dict:
    """{reward: mean weighted reward, reward_<fn>: each function's mean where it applies} of one answer per example."""
    if not answers:
        return {}
    from ftlab.data.kinds.prompt import decode_row

    rows = [decode_row(x["row"]) for x in examples]
    scores, total = score_completions(options, rows, answers, [[] for _ in answers], 1)
    return {"reward": sum(total) / len(total), **{f"reward_{n}": applied_mean(v) for n, v in scores.items()}}
