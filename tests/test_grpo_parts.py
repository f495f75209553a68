"""GRPO's parts on their own: the objective against hand-worked values, advantages, seeded sampling, reward
functions (shipped, TRL-style, and broken ones refused in one line)."""

import math
import sys
import textwrap

import pytest
import torch

from ftlab.methods.grpo import builtin, rewards, rollout
from ftlab.methods.grpo import loss as grpo_loss
from ftlab.utils.errors import ConfigError, FtlabError

# two completions of two positions each: the second has one token masked out
LOGPS = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]])
OLD = torch.tensor([[-1.2, -1.9], [-0.5, -1.0]])
MASK = torch.tensor([[1, 1], [1, 0]])
ADV = torch.tensor([1.0, -1.0])


def run(**kw):
    args = dict(loss_type="grpo", level="token", eps_low=0.2, eps_high=0.2)
    args.update(kw)
    return grpo_loss.objective(LOGPS, OLD, ADV, MASK, **args)


def test_advantages_are_centred_and_scaled_by_the_groups_sample_std():
    adv, std = grpo_loss.advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]), 4, scale=True)
    s = math.sqrt(((0.75**2) + 3 * (0.25**2)) / 3)  # sample std (n - 1) of 1,0,0,0
    assert std.tolist() == pytest.approx([s, 0.0])
    assert adv[:4].tolist() == pytest.approx([0.75 / (s + 1e-4)] + [-0.25 / (s + 1e-4)] * 3)
    assert adv[4:].tolist() == [0.0] * 4  # one reward for the whole group: nothing to learn
    centred, _ = grpo_loss.advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, scale=False)
    assert centred.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_token_level_grpo_by_hand():
    # ratios e^0.2=1.2214 (clipped to 1.2 for A>0), e^-0.1=0.9048; second row e^0=1 (its masked token ignored)
    loss, stats = run()
    row1 = (-1.2 + -math.exp(-0.1)) / 2  # -min(r A, clip(r) A) with A = 1
    row2 = 1.0  # A = -1, r = 1: -min(-1, -1)
    assert float(loss) == pytest.approx((row1 + row2) / 2, abs=1e-6)
    assert stats == {"kl": 0.0, "clipped": 1.0, "tokens": 3.0}


def test_dr_grpo_and_dapo_normalisers_by_hand():
    terms = [-1.2, -math.exp(-0.1), 1.0]  # the three unmasked token losses
    dr, _ = run(loss_type="dr_grpo", max_length=4)
    assert float(dr) == pytest.approx(sum(terms) / (2 * 4), abs=1e-6)
    dapo, _ = run(loss_type="dapo")
    assert float(dapo) == pytest.approx(sum(terms) / 3, abs=1e-6)
    # a part of a larger step: the step's totals are the normalisers
    part, _ = run(loss_type="dapo", totals=grpo_loss.Totals(completions=8, tokens=12))
    assert float(part) == pytest.approx(sum(terms) / 12, abs=1e-6)
    part, _ = run(totals=grpo_loss.Totals(completions=8))
    assert float(part) == pytest.approx(((terms[0] + terms[1]) / 2 + terms[2]) / 8, abs=1e-6)


def test_clip_higher_lets_a_good_token_grow_further():
    loss, stats = run(eps_high=0.28)  # 1.2214 < 1.28: not clipped now
    row1 = (-math.exp(0.2) - math.exp(-0.1)) / 2
    assert float(loss) == pytest.approx((row1 + 1.0) / 2, abs=1e-6)
    assert stats["clipped"] == 0.0


def test_sequence_level_ratio_is_gspo():
    # row 1: mean log-ratio (0.2 - 0.1) / 2 = 0.05, one ratio e^0.05 for both tokens; row 2: its one token, 0
    loss, _ = run(level="sequence")
    assert float(loss) == pytest.approx((-math.exp(0.05) + 1.0) / 2, abs=1e-6)


def test_kl_penalty_is_k3_to_the_reference():
    ref = torch.tensor([[-1.5, -2.0], [-0.5, -1.0]])
    loss, stats = run(beta=0.1, ref_logps=ref)
    q = -0.5  # ref - logp at the first token; the others are 0, whose k3 is 0
    k3 = math.exp(q) - q - 1
    assert stats["kl"] == pytest.approx(k3, abs=1e-6)
    plain, _ = run()
    assert float(loss) == pytest.approx(float(plain) + 0.1 * k3 / 2 / 2, abs=1e-6)


def test_the_gradient_raises_the_better_completion():
    logps = LOGPS.clone().requires_grad_(True)
    loss, _ = grpo_loss.objective(
        logps, logps.detach(), ADV, MASK, loss_type="grpo", level="token", eps_low=0.2, eps_high=0.2
    )
    loss.backward()
    assert (logps.grad[0] < 0).all()  # descending the loss raises A>0's log-probabilities
    assert logps.grad[1, 0] > 0 and logps.grad[1, 1] == 0  # lowers A<0's; the masked token gets nothing


def test_sampling_follows_the_distribution_and_each_rows_own_stream():
    probs = rollout.filtered_probs(torch.tensor([[0.0, math.log(3.0)]]), 1.0, 0, 1.0)
    assert probs.tolist()[0] == pytest.approx([0.25, 0.75])
    assert rollout.draw(probs, torch.tensor([0.2])).item() == 0
    assert rollout.draw(probs, torch.tensor([0.3])).item() == 1
    u = rollout.uniforms([rollout.stream_seed(0, "a.jsonl:1", 5, j) for j in range(3)], 4)
    again = rollout.uniforms([rollout.stream_seed(0, "a.jsonl:1", 5, 2)], 4)
    assert torch.equal(u[2], again[0])  # a completion's stream does not depend on its neighbours
    assert not torch.equal(u[0], u[1])
    assert rollout.stream_seed(0, "a.jsonl:1", 5, 0) != rollout.stream_seed(0, "a.jsonl:1", 6, 0)


def test_top_k_and_top_p_cut_the_tail():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert rollout.filtered_probs(scores, 1.0, 2, 1.0).tolist()[0] == pytest.approx([0.625, 0.375, 0, 0])
    # top_p=0.7: 0.5 then 0.3 reaches it; the rest are dropped
    assert rollout.filtered_probs(scores, 1.0, 0, 0.7).tolist()[0] == pytest.approx([0.625, 0.375, 0, 0])
    assert rollout.filtered_probs(scores, 1.0, 0, 0.5).tolist()[0] == pytest.approx([1, 0, 0, 0])


# ── reward functions ─────────────────────────────────────────────────────────────────────────────


def test_shipped_rewards_by_hand():
    chat = [[{"role": "assistant", "content": "The answer is Paris."}], [{"role": "assistant", "content": "london"}]]
    assert builtin.exact_match(chat, reference=["paris", "London"]) == [0.0, 1.0]
    assert builtin.exact_match(["#### 42", "#### 41", "x"], reference=["42", "42", None], pattern=r"#### (\d+)") == [
        1.0,
        0.0,
        None,
    ]
    assert builtin.regex(["<think>a</think>4", "4"], pattern=r"<think>.*</think>\d+") == [1.0, 0.0]
    assert builtin.json_valid(['{"a": 1}', "```json\n[1]\n```", "{a: 1}"]) == [1.0, 1.0, 0.0]
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert builtin.json_valid(['{"a": 1}', '{"a": "x"}', "[]"], schema=schema) == [1.0, 0.0, 0.0]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {}, "unit": {}}, "required": ["city"]}}}]  # fmt: skip
    calls = [
        '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>',
        '{"name": "weather", "arguments": {"unit": "C"}}',  # misses the required city
        '{"name": "weather", "arguments": {"city": "Oslo", "when": "now"}}',  # an undeclared argument
        '{"name": "time", "arguments": {}}',  # no such tool
        "It is sunny.",
    ]
    assert builtin.tool_call(calls, tools=[tools] * 5) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert builtin.tool_call(["x"], tools=[None]) == [None]
    assert builtin.length(["one two three", "one", "a b c d e f"], target=3) == pytest.approx([1.0, 1 / 3, 0.0])
    assert builtin.length(["abcd"], target=2, unit="chars") == [0.0]


@pytest.fixture
def user_rewards(tmp_path, monkeypatch):
    """A module of reward functions as a user writes them, importable as my_rewards."""
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            def reward_len(completions, **kwargs):  # TRL's documented example, unchanged
                return [-abs(20 - len(completion)) for completion in completions]

            def format_reward(completions, **kwargs):  # TRL's conversational example
                import re
                pattern = r"^<think>.*?</think><answer>.*?</answer>$"
                contents = [completion[0]["content"] for completion in completions]
                return [1.0 if re.match(pattern, c) else 0.0 for c in contents]

            def needs_solution(prompts, completions, solution):
                return [float(c.strip() == s) for c, s in zip(completions, solution)]

            def by_position(p, c, /):
                return [0.0]

            def no_completions(prompts):
                return [0.0]

            def crashes_on_b(completions, **kwargs):
                return [1.0 / (c != "b") for c in completions]

            def wrong_length(completions, **kwargs):
                return [1.0]

            def text_value(completions, **kwargs):
                return ["high" for _ in completions]

            def raises_on_import():
                pass
            """
        )
    )
    (tmp_path / "broken_rewards.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("my_rewards", "broken_rewards"):
        sys.modules.pop(name, None)


def test_a_trl_reward_function_works_unchanged(user_rewards):
    [length, fmt] = rewards.resolve([{"fn": "my_rewards:reward_len"}, {"fn": "my_rewards.format_reward", "weight": 2}])
    texts = ["x" * 20, "x" * 25]
    scores = rewards.score([length], ["p", "p"], texts, [[1], [2]], {"other": [1, 2]}, ["r:1", "r:1"])
    assert scores == {"reward_len": [0.0, -5.0]}
    chat = [
        [{"role": "assistant", "content": "<think>a</think><answer>b</answer>"}],
        [{"role": "assistant", "content": "b"}],
    ]
    scores = rewards.score([fmt], [[], []], chat, [[1], [2]], {}, ["r:1", "r:1"])
    assert scores == {"format_reward": [1.0, 0.0]}
    assert rewards.weighted([fmt], scores) == [2.0, 0.0]


def test_a_function_without_kwargs_gets_the_columns_it_names(user_rewards):
    [r] = rewards.resolve([{"fn": "my_rewards:needs_solution"}])
    got = rewards.score([r], ["p", "p"], ["4", "5"], [[1], [2]], {"solution": ["4", "4"], "other": [0, 0]}, ["a", "a"])
    assert got == {"needs_solution": [1.0, 0.0]}
    rewards.check_columns([r], {"solution", "other"}, "data.jsonl")
    with pytest.raises(
        ConfigError, match=r"method.rewards\[0\].fn: needs_solution needs a column 'solution'.*columns: answer"
    ):
        rewards.check_columns([r], {"answer"}, "data.jsonl")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"fn": "my_rewards:nope"}, r"method.rewards\[0\].fn=my_rewards:nope: my_rewards has no 'nope' \(it has "),
        ({"fn": "no_such_pkg.rewards:f"}, r"cannot import no_such_pkg.rewards \(ModuleNotFoundError"),
        ({"fn": "broken_rewards:f"}, r"cannot import broken_rewards \(ModuleNotFoundError: No module named 'not_a_"),
        ({"fn": "exact_matc"}, r"method.rewards\[0\].fn=exact_matc: no shipped reward of that name \(shipped: exact"),
        ({"fn": "my_rewards:by_position"}, r"p is positional-only; rewards are called by keyword"),
        ({"fn": "my_rewards:no_completions"}, r"does not accept completions="),
        ({"fn": "exact_match", "weight": "high"}, r"method.rewards\[0\].weight must be a number.*'high'"),
        (
            {"fn": "my_rewards:needs_solution", "solutoin": 1},
            r"rewards\[0\].solutoin: my_rewards:needs_solution takes no argument 'solutoin' \(it takes solution\)",
        ),
        ({"weight": 1}, r"method.rewards\[0\].fn is missing"),
    ],
)
def test_a_broken_reward_is_refused_naming_its_key(user_rewards, entry, message):
    with pytest.raises(ConfigError, match=message) as e:
        rewards.resolve([entry])
    assert "\n" not in str(e.value)


def test_a_reward_that_fails_mid_run_names_itself_and_the_row(user_rewards):
    names = ("crashes_on_b", "wrong_length", "text_value")
    fns = {r.name: r for r in rewards.resolve([{"fn": f"my_rewards:{n}"} for n in names])}
    rows = ["data.jsonl:3", "data.jsonl:4"]
    with pytest.raises(
        FtlabError, match=r"reward crashes_on_b \(method.rewards\[0\]\) raised ZeroDivisionError: .* on data.jsonl:4"
    ):
        rewards.score([fns["crashes_on_b"]], ["p", "p"], ["a", "b"], [[1], [2]], {}, rows)
    with pytest.raises(FtlabError, match=r"wrong_length \(method.rewards\[1\]\) returned 1 values for 2 completions"):
        rewards.score([fns["wrong_length"]], ["p", "p"], ["a", "b"], [[1], [2]], {}, rows)
    with pytest.raises(
        FtlabError, match=r"returned 'high' for completion 0 of data.jsonl:3; each value must be a float"
    ):
        rewards.score([fns["text_value"]], ["p", "p"], ["a", "b"], [[1], [2]], {}, rows)


def test_none_means_not_applicable():
    [exact, length] = rewards.resolve([{"fn": "exact_match"}, {"fn": "length", "target": 1, "weight": 0.5}])
    scores = rewards.score([exact, length], ["p", "q"], ["x", "y"], [[1], [2]], {"reference": ["x", None]}, ["a", "b"])
    assert scores == {"exact_match": [1.0, None], "length": [1.0, 1.0]}
    assert rewards.weighted([exact, length], scores) == [1.5, 0.5]


def test_truncated_completions_and_flat_groups_leave_the_loss():
    from types import SimpleNamespace

    from ftlab.methods.grpo.step import loss_mask

    mask = torch.ones(4, 3, dtype=torch.bool)  # two groups of two completions
    truncated, flat = torch.tensor([False, True, False, False]), torch.tensor([False, True])
    off = SimpleNamespace(mask_truncated=False, filter_zero_std=False)
    assert torch.equal(loss_mask(mask, truncated, flat, 2, off), mask)
    both = SimpleNamespace(mask_truncated=True, filter_zero_std=True)
    assert loss_mask(mask, truncated, flat, 2, both).sum(1).tolist() == [3, 0, 0, 0]
    # and so their tokens leave DAPO's normaliser: the loss is over the one completion left
    loss, stats = grpo_loss.objective(
        torch.zeros(4, 3), torch.zeros(4, 3), torch.tensor([1.0, 5.0, 5.0, 5.0]),
        loss_mask(mask, truncated, flat, 2, both), loss_type="dapo", level="token", eps_low=0.2, eps_high=0.2,
    )  # fmt: skip
    assert float(loss) == pytest.approx(-1.0) and stats["tokens"] == 3
