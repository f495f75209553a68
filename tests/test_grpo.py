"""method=grpo end to end on the tiny model: prompt data (and chat data read as prompts), a run with its logged
figures and sample tables, resume retracing the run, two DDP ranks equal to one process, refusals in one line."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import grpo_rewards
from conftest import CHAT, run_cli, run_dirs, run_main, write_rows
from ftlab import FineTune, compose
from ftlab.data.kinds.prompt import decode_row
from ftlab.utils.errors import ConfigError
from test_train import Interrupt, InterruptedRun

TESTS = Path(__file__).parent
PROMPTS = [
    {"prompt": f"Spell the word number {i}.", "reference": f"w{i}", "topic": ["a", "b"][i % 2]} for i in range(24)
]
RULES = [
    "method=grpo",
    "method.rewards=[{fn:grpo_rewards.vowels}]",
    "method.num_generations=4",
    "method.max_completion_length=6",
    "lora.dropout=0",  # ranks draw their own dropout masks: equal runs need none
    "optim.lr=3e-3",
]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", PROMPTS)


def options(prompts: Path, cache_dir: Path, *extra) -> list:
    return [
        "model=tiny",
        f"data.path={prompts}",
        "data.val_size=4",
        "data.batch_size=4",
        "trainer.max_steps=4",
        "trainer.precision=32-true",
        "trainer.log_every_n_steps=1",
        "trainer.checkpoint_every_n_steps=2",
        f"cache_dir={cache_dir}",
        *RULES,
        *extra,
    ]


def logged(run_dir: Path, name: str) -> dict:
    rows = csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
    return {int(r["step"]): float(r[name]) for r in rows if r.get(name)}


def adapter(run_dir: Path) -> dict:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def single(tmp_path_factory, prompts, cache_dir) -> Path:
    """One process, 4 prompts a step, 4 steps, samples every 2."""
    run_dir = tmp_path_factory.mktemp("grpo") / "run"
    FineTune(compose(options(prompts, cache_dir, "method.samples_every=2")), run_dir=run_dir).run()
    return run_dir


def test_prompt_rows_keep_their_columns_for_the_rewards(prompts, cache_dir):
    from conftest import prepare_data

    data = prepare_data(f"data.path={prompts}", "data.val_size=4", "method=grpo", "method.rewards=[exact_match]")
    assert data.data_format == "prompt" and data.prepared.kind == "prompt"
    example = data.prepared.splits["train"].items[0]
    row = decode_row(example["row"])
    i = int(row["prompt"].split()[-1].rstrip("."))
    assert row == {"prompt": f"Spell the word number {i}.", "reference": f"w{i}", "columns": {"topic": "ab"[i % 2]},
                   "where": row["where"]}  # fmt: skip
    # the tokens are the prompt as inference renders it, generation prompt included, and nothing to learn
    text = data.tokenizer.decode(example["input_ids"])
    assert text.endswith(f"Spell the word number {i}.<|im_end|>\n<|im_start|>assistant\n")
    assert set(example["labels"]) == {-100}


def test_chat_rows_train_grpo_with_their_last_answer_as_the_reference(cache_dir):
    from conftest import prepare_data

    data = prepare_data(f"data.path={CHAT}", "data.val_size=4", "method=grpo", "method.rewards=[exact_match]")
    assert data.data_format == "conversation" and data.prepared.kind == "prompt"
    first = json.loads(CHAT.read_text().splitlines()[0])
    turns = first.get("messages") or first.get("conversations")
    answers = {decode_row(x["row"])["reference"] for x in data.prepared.splits["train"].items}
    assert turns[-1]["content"] in answers | {
        decode_row(x["row"])["reference"] for x in data.prepared.splits["validation"].items
    }


def test_a_run_logs_rewards_and_writes_sample_tables(single):
    metrics = json.loads((single / "metrics.json").read_text())
    for key in ("val_reward_before", "val_reward_after", "val_reward_vowels_after", "val_completion_length_after"):
        assert key in metrics, key
    assert metrics["steps"] == 4
    for name in ("train/reward", "train/reward_vowels", "train/kl", "train/clip_fraction", "train/truncated",
                 "train/zero_std_groups", "train/completion_length_max", "train/generation_tok_s"):  # fmt: skip
        assert sorted(logged(single, name)) == [0, 1, 2, 3], name
    assert all(0 <= v <= 6 for v in logged(single, "train/completion_length_max").values())
    tables = sorted(p.name for p in (single / "samples").iterdir())
    assert tables == ["step-000002.jsonl", "step-000004.jsonl"]
    lines = [json.loads(x) for x in (single / "samples" / "step-000002.jsonl").read_text().splitlines()]
    assert len(lines) == 16  # 4 prompts x 4 completions
    assert {len(x["completion"]) <= 6 * 4 for x in lines} == {True}
    for x in lines:
        assert x["reward"] == pytest.approx(x["rewards"]["vowels"])
        assert x["reward"] == pytest.approx(grpo_rewards.vowels([x["completion"]])[0])
    card = (single / "README.md").read_text()
    assert "scored by grpo_rewards.vowels" in card


def test_rewards_get_every_column_one_value_per_completion(prompts, cache_dir, tmp_path):
    grpo_rewards.CALLS.clear()
    over = options(prompts, cache_dir, "trainer.max_steps=1", "trainer.val_every_n_steps=0")
    over += ["method.rewards=[{fn:grpo_rewards.vowels},{fn:grpo_rewards.seen}]"]
    FineTune(compose(over), run_dir=tmp_path / "run").run()
    call = grpo_rewards.CALLS[-1]
    assert len(call["completions"]) == len(call["prompts"]) == len(call["topic"]) == 16
    for i in range(0, 16, 4):  # a group: one prompt and its row's values, four completions
        assert len(set(call["prompts"][i : i + 4])) == 1 and len(set(call["topic"][i : i + 4])) == 1
        number = int(call["prompts"][i].split()[-1].rstrip("."))
        assert call["topic"][i] == "ab"[number % 2]


def test_the_same_seed_samples_the_same_completions(single, prompts, cache_dir, tmp_path):
    FineTune(compose(options(prompts, cache_dir, "method.samples_every=2")), run_dir=tmp_path / "run").run()
    for name in ("step-000002.jsonl", "step-000004.jsonl"):
        assert (tmp_path / "run" / "samples" / name).read_text() == (single / "samples" / name).read_text()
    assert logged(tmp_path / "run", "train/loss") == logged(single, "train/loss")


def test_an_interrupted_grpo_run_resumes_and_retraces(workdir, prompts, cache_dir, single):
    over = options(prompts, cache_dir, "method.samples_every=2", "trainer.max_steps=4")
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        InterruptedRun(compose(over)).run()
    FineTune(compose(over + ["resume=last"])).run()
    resumed = run_dirs(workdir)[-1]
    expected, got = logged(single, "train/reward"), logged(resumed, "train/reward")
    assert sorted(got) == [2, 3]
    for step in got:
        assert got[step] == expected[step]  # the same completions, drawn from the same streams
    assert logged(resumed, "train/loss") == {s: v for s, v in logged(single, "train/loss").items() if s >= 2}
    assert (resumed / "samples" / "step-000004.jsonl").read_text() == (
        single / "samples" / "step-000004.jsonl"
    ).read_text()
    a, b = (
        load_file(resumed / "adapter" / "adapter_model.safetensors"),
        load_file(single / "adapter" / "adapter_model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.process
def test_two_ddp_ranks_train_as_one_process(workdir, prompts, cache_dir, single):
    over = options(prompts, cache_dir, "method.samples_every=2", "data.batch_size=2", "trainer.devices=2")
    result = run_cli(*over, "trainer.strategy=ddp", cwd=workdir, env_extra={"PYTHONPATH": str(TESTS)})
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(workdir)
    for name in ("train/reward", "train/completion_length", "train/zero_std_groups"):
        expected = logged(single, name)
        assert logged(run_dir, name) == pytest.approx(expected, rel=1e-6), name
    for step, loss in logged(single, "train/loss").items():
        assert logged(run_dir, "train/loss")[step] == pytest.approx(loss, abs=1e-6)
    a, b = (
        load_file(run_dir / "adapter" / "adapter_model.safetensors"),
        load_file(single / "adapter" / "adapter_model.safetensors"),
    )
    for k in a:
        # the ranks' gradients are summed in another order than one process sums them; Adam's division by the root of
        # a tiny second moment can carry that last-bit difference to a few millionths of a weight (seen: 3.5e-6)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["method.rewards=[]"], "method=grpo needs reward functions: method.rewards="),
        (
            ["method.rewards=[{fn:grpo_rewards.nope}]"],
            r"method.rewards\[0\].fn=grpo_rewards.nope: grpo_rewards has no 'nope'",
        ),
        (["method.rewards=[{fn:exact_match,weight:x}]"], r"method.rewards\[0\].weight must be a number"),
        (["method.loss_type=dapo", "trainer.accumulate_grad_batches=2"], "set trainer.accumulate_grad_batches=1"),
        (["method.epsilon_high=0.1"], r"method.epsilon_high \(0.1\) must be at least method.epsilon \(0.2\)"),
    ],
)
def test_a_bad_grpo_config_is_refused_in_one_line(workdir, prompts, cache_dir, capsys, extra, message):
    result = run_main(*options(prompts, cache_dir), *extra, capsys=capsys)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert re.search(message, line), line
    assert not (workdir / "outputs").exists() or not run_dirs(workdir)


def test_a_reward_naming_a_missing_column_is_refused_before_the_model_loads(workdir, prompts, cache_dir):
    over = options(prompts, cache_dir, "method.rewards=[{fn:grpo_rewards.seen}]")
    with pytest.raises(ConfigError, match=r"method.rewards\[0\].fn: seen needs a column 'topic'"):
        rows = write_rows(workdir / "no_topic.jsonl", [{"prompt": f"p{i}"} for i in range(12)])
        FineTune(compose(over + [f"data.path={rows}"]), run_dir=workdir / "run").run()
    assert not (workdir / "run").exists()


def test_sft_on_prompt_rows_is_refused_naming_grpo(prompts, cache_dir):
    from conftest import prepare_data

    with pytest.raises(ConfigError, match="this data is in the prompt format; .* or train it with method=grpo"):
        prepare_data(f"data.path={prompts}", "data.val_size=4")


def test_the_cache_keeps_prompts_apart_from_answers(cache_dir):
    """The same chat rows are prompts to GRPO and labelled answers to SFT: one must not be served for the other."""
    from conftest import prepare_data

    common = (f"data.path={CHAT}", "data.val_size=4", f"cache_dir={cache_dir}")
    assert prepare_data(*common, "method=grpo").prepared.kind == "prompt"
    tokens = prepare_data(*common).prepared
    assert tokens.kind == "tokens" and any(set(x["labels"]) != {-100} for x in tokens.splits["train"].items)


def test_evaluation_scores_the_answers_with_the_rewards_base_against_tuned(single, tmp_path, capsys):
    import shutil

    run = Path(shutil.copytree(single, tmp_path / "run"))
    result = run_main(f"run={run}", "eval.split=validation", "generation.max_new_tokens=6", module="ftlab.evaluate",
                      capsys=capsys)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run / "eval" / "report.json").read_text())
    generations = [json.loads(x) for x in (run / "eval" / "generations.jsonl").read_text().splitlines()]
    for side in ("base", "tuned"):
        answers = [g["answers"][side]["output"] if "answers" in g else g[side] for g in generations]
        expected = grpo_rewards.vowels(answers)
        assert report["scores"][side]["reward_vowels"] == pytest.approx(sum(expected) / len(expected))
        assert report["scores"][side]["reward"] == pytest.approx(sum(expected) / len(expected))
    assert "| reward vowels |" in (run / "eval" / "report.md").read_text()


def test_folded_sampling_gives_the_unfolded_completions_and_puts_the_weights_back(single):
    from peft import PeftModel

    from ftlab.methods.grpo import rollout

    recipe = FineTune(compose(["model=tiny", *RULES]))
    tokenizer = recipe.load_tokenizer(None)
    model = PeftModel.from_pretrained(recipe.load_base_model(recipe.model_source()), single / "adapter").eval()
    weights = dict(model.named_parameters())
    copies = {n: p.detach().clone() for n, p in weights.items()}
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]]),
        "attention_mask": torch.tensor([[1] * 4, [0, 1, 1, 1]]),
    }

    class Sampling:
        max_completion_length, temperature, top_k, top_p = 8, 1.0, 0, 1.0

    args = dict(group=3, seeds=list(range(6)), options=Sampling, stop_ids=[tokenizer.eos_token_id], pad_id=0)
    with torch.no_grad():
        plain = rollout.generate(model, batch, **args)
        with rollout.merged(model) as folded:
            merged = rollout.generate(folded, batch, **args)
            moved = any(not torch.equal(p, copies[n]) for n, p in folded.named_parameters() if "base_layer" in n)
    assert moved  # the weights were folded while sampling ...
    assert torch.equal(plain.input_ids, merged.input_ids) and plain.completion_ids == merged.completion_ids
    for n, p in model.named_parameters():  # ... and the very same tensors, unchanged, are back
        assert p is weights[n] and torch.equal(p, copies[n]), n


def test_preview_samples_the_starting_model_and_scores_it(prompts, cache_dir, capsys):
    result = run_main(*options(prompts, cache_dir), "-n", "2", module="ftlab.preview", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "4 completions per prompt, sampled from the starting model" in out
    assert out.count("  reward ") == 8  # 2 prompts x 4 completions, each with its score
    assert "vowels: mean" in out and "applies to 8/8" in out and "have one reward for all their completions" in out


class StoppedAfterTwo(FineTune):
    def callbacks(self, run_dir):
        return super().callbacks(run_dir) + [Interrupt(2)]  # Ctrl+C once step 2 ends, before its checkpoint


@pytest.fixture(scope="module")
def two_passes(tmp_path_factory, prompts, cache_dir) -> Path:
    run_dir = tmp_path_factory.mktemp("passes") / "run"
    over = options(prompts, cache_dir, "method.passes=2", "trainer.checkpoint_every_n_steps=1", "lora.dropout=0.1")
    FineTune(compose(over), run_dir=run_dir).run()
    return run_dir


def test_passes_learn_twice_from_each_sampling(two_passes):
    metrics = json.loads((two_passes / "metrics.json").read_text())
    assert metrics["steps"] == 4
    lengths = logged(two_passes, "train/completion_length")
    assert lengths[1] == lengths[0] and lengths[3] == lengths[2]
    # two samplings (steps 0 and 2) of 4 prompts x 4 completions, not four
    assert metrics["generated_tokens"] == pytest.approx(16 * (lengths[0] + lengths[2]))
    rewards, losses = logged(two_passes, "train/reward"), logged(two_passes, "train/loss")
    assert rewards[1] == rewards[0] and rewards[3] == rewards[2]  # the same completions, scored once
    # a first pass is on-policy (ratio 1: the advantages' mean, 0 here); the second learns off-policy from them
    assert abs(losses[0]) < 1e-6 and abs(losses[2]) < 1e-6
    assert abs(losses[1]) > 1e-4


def test_a_run_interrupted_between_passes_resumes_with_its_completions(workdir, prompts, cache_dir, two_passes):
    over = options(prompts, cache_dir, "method.passes=2", "trainer.checkpoint_every_n_steps=1", "lora.dropout=0.1")
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        StoppedAfterTwo(compose(over)).run()  # its last checkpoint, after step 1, holds the completions of step 0
    checkpoint = torch.load(run_dirs(workdir)[-1] / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 1 and len(checkpoint["ftlab_carry"][0]) == 1
    FineTune(compose(over + ["resume=last"])).run()
    resumed = run_dirs(workdir)[-1]
    assert logged(resumed, "train/loss") == {s: v for s, v in logged(two_passes, "train/loss").items() if s >= 1}
    a, b = adapter(resumed), adapter(two_passes)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.process
def test_a_sweep_maximizes_the_held_out_reward(workdir, prompts, cache_dir):
    result = run_cli(
        "-m", "sweep=grpo", "model=tiny", f"data.path={prompts}", "data.val_size=4", "data.batch_size=4",
        "trainer.max_steps=2", "trainer.precision=32-true", "method.rewards=[{fn:grpo_rewards.vowels}]",
        "method.num_generations=4", "method.max_completion_length=6", "hydra.sweeper.n_trials=2",
        f"cache_dir={cache_dir}", cwd=workdir, env_extra={"PYTHONPATH": str(TESTS)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    import optuna

    study = optuna.load_study(study_name="grpo", storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    for t in trials:
        assert set(t.params) == {"optim.lr", "method.epsilon_high", "method.temperature"}
        trial_dir = workdir / "outputs" / "sweeps" / "grpo" / f"trial-{t.number}"
        assert t.value == pytest.approx(json.loads((trial_dir / "metrics.json").read_text())["val_reward_after"])


def test_a_reward_that_raises_mid_run_stops_with_a_checkpoint_to_continue(workdir, prompts, cache_dir, single):
    from ftlab.utils.errors import FtlabError

    later = [json.loads(x) for x in (single / "samples" / "step-000004.jsonl").read_text().splitlines()]
    grpo_rewards.FAIL_ON.clear()
    grpo_rewards.FAIL_ON.add(later[0]["prompt"])  # a prompt of the fourth step (step 3)
    over = options(prompts, cache_dir, "method.samples_every=2", "method.rewards=[{fn:grpo_rewards.flaky}]")
    try:
        with pytest.raises(FtlabError) as e:
            FineTune(compose(over)).run()
    finally:
        grpo_rewards.FAIL_ON.clear()
    run_dir = run_dirs(workdir)[-1]
    message, run = str(e.value), run_dir.relative_to(workdir)
    assert message.startswith("reward flaky (method.rewards[0]) raised KeyError: \"no rule for 'Spell the word")
    assert f"on {later[0]['where']}; step 3 written to {run / 'checkpoints' / 'last.ckpt'}: fix it and " in message
    assert message.endswith(f"continue with python -m ftlab resume={run}") and "\n" not in message
    FineTune(compose(over + [f"resume={run_dir}"])).run()  # the bug fixed, the run goes on from step 3
    resumed = run_dirs(workdir)[-1]
    assert logged(resumed, "train/loss") == {3: logged(single, "train/loss")[3]}
    a, b = adapter(resumed), adapter(single)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra", [["quant=4bit"], ["lora=dora"]])
def test_grpo_trains_on_a_4bit_base_and_with_dora(prompts, cache_dir, tmp_path, extra):
    """Neither can fold the adapter into its weights for sampling: it samples with the adapter as it is."""
    over = options(prompts, cache_dir, "trainer.max_steps=2", "trainer.val_every_n_steps=0", *extra)
    result = FineTune(compose(over), run_dir=tmp_path / "run").run()
    assert result["steps"] == 2 and result["generated_tokens"] > 0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_a_grpo_run_answers_and_exports_like_any_run(single, tmp_path, capsys, monkeypatch):
    import io
    import shutil
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    args = (f"run={single}", "prompt=Spell the word number 3.", "generation.max_new_tokens=4")
    answered = run_main(*args, module="ftlab.infer", capsys=capsys)
    assert answered.returncode == 0 and answered.stdout.endswith("\n"), answered.stderr[-2000:]  # the answer's line
    run = shutil.copytree(single, tmp_path / "run")
    exported = run_main(f"run={run}", module="ftlab.export", capsys=capsys)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (run / "merged" / "model.safetensors").is_file()
