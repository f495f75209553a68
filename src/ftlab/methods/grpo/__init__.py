"""Group Relative Policy Optimization (method=grpo) and its successors: online RL with rewards written in Python.

Each step samples `num_generations` completions per prompt from the model being trained (rollout.py), scores
them with the reward functions of method.rewards (rewards.py; shipped ones in builtin.py), turns each reward into
an advantage relative to its group, and raises the likelihood of the better completions through a clipped
objective (loss.py: GRPO, Dr. GRPO, DAPO, GSPO). Prompts come from the prompt format or any chat data (its last
answer is the reference). docs/rl.md has the options with their trade-offs.

This module stays light (composing reads the options); the computing modules import torch and transformers and
are loaded by the loss.
"""

from dataclasses import dataclass
from typing import Any, Dict, List

from ftlab.methods import METHODS, Method, Metric
from ftlab.utils.options import opt

METRICS = {
    "reward": Metric("reward (weighted sum)", shown=True, validated=True),
    "reward_std": Metric("reward std"),
    "kl": Metric("KL to the reference"),
    "clip_fraction": Metric("clipped tokens", percent=True),
    "completion_length": Metric("completion length (mean tokens)", validated=True),
    "completion_length_max": Metric("completion length (max tokens)"),
    "truncated": Metric("truncated completions", percent=True, validated=True),
    "zero_std_groups": Metric("groups with one reward for all", percent=True),
    "generation_tok_s": Metric("generation tokens/s (per process)", shown=True),
}


@dataclass
class Options:
    name: str = "grpo"
    rewards: List[Any] = opt(
        [{"fn": "exact_match", "weight": 1.0}], example="method.rewards=[{fn:exact_match,weight:1.0}]"
    )
    """The reward functions, each {fn, weight (default 1), name?, ...its own arguments}: fn a shipped reward
    (exact_match, regex, json_valid, tool_call, length) or module:function called TRL's way,
    fn(prompts, completions, **columns) -> [float or None]. A completion's reward is the weighted sum. The default
    scores each answer against the row's reference."""
    num_generations: int = opt(8, ge=2, example="method.num_generations=8")
    """Completions sampled per prompt (the group). More: steadier advantages, more generation per step."""
    max_completion_length: int = opt(256, ge=1, example="method.max_completion_length=256")
    """Tokens a completion may have; one that reaches it without a stop token is truncated."""
    temperature: float = opt(1.0, gt=0, example="method.temperature=0.9")
    """Sampling temperature. Lower: surer completions, fewer differences in a group to learn from."""
    top_p: float = opt(1.0, gt=0, le=1, example="method.top_p=0.95")
    """Nucleus sampling: the smallest set of tokens holding this probability mass; 1: all."""
    top_k: int = opt(0, ge=0, example="method.top_k=50")
    """Sample from the k likeliest tokens only; 0: all."""
    loss_type: str = opt("grpo", choices=["grpo", "dr_grpo", "dapo"], example="method.loss_type=dr_grpo")
    """How token losses become the step's loss. grpo: each completion's mean, then the mean over completions (short
    answers weigh more per token); dr_grpo: the sum over (completions x max_completion_length), no length bias;
    dapo: the mean over every token of the step (needs trainer.accumulate_grad_batches=1)."""
    scale_rewards: bool = opt(True, example="method.scale_rewards=false")
    """Divide each advantage by its group's reward std (GRPO). false: centred only (Dr. GRPO), so groups whose
    rewards barely differ do not get amplified."""
    importance_sampling_level: str = opt(
        "token", choices=["token", "sequence"], example="method.importance_sampling_level=sequence"
    )
    """The ratio new/old policy per token (GRPO), or per completion from its mean token log-ratio (GSPO; steadier
    with long completions)."""
    epsilon: float = opt(0.2, gt=0, lt=1, example="method.epsilon=0.2")
    """Lower clip bound: the ratio is held at >= 1 - epsilon where the advantage is negative."""
    epsilon_high: float = opt(0.2, gt=0, example="method.epsilon_high=0.28")
    """Upper clip bound, 1 + epsilon_high where the advantage is positive; above epsilon (DAPO: 0.28) leaves
    unlikely good tokens room to grow."""
    beta: float = opt(0.0, ge=0, example="method.beta=0.04")
    """Weight of the KL penalty to the reference (the base model, adapter off); 0: no penalty and no reference
    pass, the cheapest."""
    merge_for_sampling: bool = opt(True, example="method.merge_for_sampling=false")
    """Sample with the adapter folded into a copy of the weights it adapts (faster: one matrix product per layer
    instead of three), holding that copy in memory while sampling; skipped on a quantized base, DoRA or FSDP."""
    passes: int = opt(1, ge=1, example="method.passes=2")
    """Optimizer steps on each batch of sampled completions (mu): more learning per sampling, further off-policy
    (the clipped ratio to the sampling policy keeps each step close). trainer.max_steps counts them all."""
    mask_truncated: bool = opt(False, example="method.mask_truncated=true")
    """Leave completions that hit max_completion_length out of the loss (DAPO's overlong filtering)."""
    filter_zero_std: bool = opt(False, example="method.filter_zero_std=true")
    """Leave groups whose completions all got the same reward out of the loss and its normaliser; they teach
    nothing (needs trainer.accumulate_grad_batches=1). Counted either way (zero_std_groups)."""
    samples_every: int = opt(10, ge=0, example="method.samples_every=5")
    """Every this many steps, write the step's prompts, completions and rewards to samples/step-N.jsonl (and the
    trackers); 0: never."""


@METHODS.register
class GRPO(Method):
    name = "grpo"
    summary = "online RL: sample completions of each prompt, score them with reward functions, learn from the better"
    Options = Options
    kind = "prompt"
    reference = True
    per_example = True
    metrics = METRICS

    def checks(self, cfg):
        m = cfg.method
        if not m.rewards:
            yield "method=grpo needs reward functions: method.rewards=[{fn:exact_match,weight:1.0}] (docs/rl.md)"
        accumulating = cfg.trainer.accumulate_grad_batches > 1
        if accumulating and m.loss_type == "dapo":
            yield (
                "method.loss_type=dapo normalises by the step's generated tokens, known only once all are generated; "
                "set trainer.accumulate_grad_batches=1 (raise data.batch_size instead)"
            )
        if accumulating and m.filter_zero_std:
            yield (
                "method.filter_zero_std=true normalises by the step's kept groups, known only once all are scored; "
                "set trainer.accumulate_grad_batches=1 (raise data.batch_size instead)"
            )
        if m.epsilon_high < m.epsilon:
            yield f"method.epsilon_high ({m.epsilon_high}) must be at least method.epsilon ({m.epsilon})"
        if cfg.data.packing:
            yield "method=grpo generates from single prompts; set data.packing=false"
        if m.rewards:
            from ftlab.methods.grpo import rewards  # imports the reward functions: composing alone does not

            try:
                rewards.resolve(m.rewards)
            except Exception as e:
                yield str(e)

    def check_data(self, options, rows: list, where: str) -> None:
        """Each column a reward function names is in the rows (the reference counts where a row has one)."""
        from ftlab.data.kinds.prompt import decode_row
        from ftlab.methods.grpo import rewards

        columns = set()
        for row in map(decode_row, (x["row"] for x in rows)):
            columns |= set(row["columns"]) | ({"reference"} if row["reference"] is not None else set())
        rewards.check_columns(rewards.resolve(options.rewards), columns, where)

    samples = True

    def preview(self, options, model, tokenizer, examples: list, seed: int) -> list:
        from ftlab.methods.grpo import preview

        return preview.lines(options, model, tokenizer, examples, seed)

    def scores(self, options, answers: List[str], examples: List[dict]) -> dict:
        """The mean weighted reward of the held-out answers, and each function's mean where it applies."""
        from ftlab.methods.grpo import step

        return step.evaluation_scores(options, answers, examples)

    def passes(self, options) -> int:
        return options.passes

    def logged(self, options) -> Dict[str, Metric]:
        from ftlab.methods.grpo import rewards

        own = {f"reward_{r.name}": Metric(f"reward {r.name}", validated=True) for r in rewards.resolve(options.rewards)}
        return {**METRICS, **own}

    def loss(self, options, forward, batch: dict):
        from ftlab.methods.grpo import step

        return step.loss(options, forward, batch)

    def ratios(self, sums: dict) -> dict:
        from ftlab.methods.grpo import step

        return step.ratios(sums)

    def loss_on(self, cfg, data_format) -> str:
        names = ", ".join(str(r.get("name") or r.get("fn")) for r in cfg.method.rewards)
        return (
            f"completions sampled during training ({cfg.method.num_generations} per prompt), scored by {names} "
            f"(`method=grpo`, loss_type={cfg.method.loss_type})"
        )
