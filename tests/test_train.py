"""End to end on CPU: tiny model in every quant mode, artifacts, determinism, resume, re-run, SmolLM2."""

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import run_cli, run_dirs, run_main
from ftlab import FineTune, compose
from ftlab.utils.errors import FtlabError

EXPECTED_FILES = {
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "adapter/README.md",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "adapter/chat_template.jinja",
    "adapter/tokenizer.json",
    "adapter/tokenizer_config.json",
    "checkpoints/last.ckpt",
    "checkpoints/previous.ckpt",
    "logs/metrics.csv",
    "loss.png",
    "metrics.json",
    "README.md",
    "train.log",
}


def files_under(run_dir: Path) -> set:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def train_losses(run_dir: Path) -> list:
    rows = csv.DictReader(open(run_dir / "logs" / "metrics.csv"))
    return [(int(r["step"]), float(r["train/loss"])) for r in rows if r["train/loss"]]


@pytest.mark.parametrize("quant,layer", [("none", "Linear"), ("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_tiny_end_to_end_in_every_quant_mode(quant, layer, workdir, tiny):
    stats = FineTune(compose(tiny + [f"quant={quant}", "trainer.log_every_n_steps=1"])).run()
    q_proj = stats.model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == layer
    assert stats["steps"] == 4 and stats["tokens_seen"] > 0
    assert torch.isfinite(torch.tensor([stats["val_loss_before"], stats["val_loss_after"]])).all()
    assert stats["val_loss_after"] != stats["val_loss_before"]  # the adapters moved
    assert any(p.abs().sum() > 0 for n, p in stats.model.named_parameters() if "lora_B" in n)  # B starts at 0
    assert (stats.run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.process
def test_cli_run_writes_exactly_the_documented_artifacts(workdir, tiny):
    result = run_cli(*tiny, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(workdir)
    assert files_under(run_dir) == EXPECTED_FILES
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "val_loss_before",
        "val_loss_after",
        "train_loss_first_step",
        "train_loss_last_steps",
        "steps",
        "tokens_seen",
        "train_seconds",
        "wall_seconds",
        "tokens_per_second",
        "git_commit",
        "versions",
    ):
        assert key in metrics
    assert set(metrics["versions"]) >= {"ftlab", "torch", "transformers", "peft", "lightning"}
    for stage in (
        "[1/6] Checking model source",
        "[3/6] Loading base model",
        "trainable parameters:",
        "effective batch size: 4",
        "validation loss before training",
        "[6/6] Saving artifacts",
    ):
        assert stage in result.stdout
    assert "tok/s=" in result.stdout + result.stderr  # the progress bar shows throughput


def test_adapter_loads_onto_the_base_model_with_peft(workdir, tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ft = FineTune(compose(tiny))
    result = ft.run()
    batch = result.data.datamodule.collate(result.data.datamodule.val[:2])
    result.model.eval()
    with torch.no_grad():
        expected = result.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = AutoModelForCausalLM.from_pretrained(ft.model_source())
        loaded = PeftModel.from_pretrained(base, result.run_dir / "adapter").eval()
        got = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected)


def test_same_config_same_seed_gives_identical_losses(workdir, tiny):
    over = tiny + ["trainer.log_every_n_steps=1", "lora.dropout=0.1"]
    first, second = FineTune(compose(over)).run(), FineTune(compose(over)).run()
    assert first["val_loss_after"] == second["val_loss_after"]
    a, b = run_dirs(workdir)
    assert train_losses(a) == train_losses(b) and len(train_losses(a)) == 4
    third = FineTune(compose(over + ["seed=7"])).run()
    assert third["val_loss_after"] != first["val_loss_after"]


class Interrupt(L.Callback):
    """Stops training after `step` optimizer steps, as Ctrl+C would."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class InterruptedRun(FineTune):
    def callbacks(self, run_dir):
        return super().callbacks(run_dir) + [Interrupt(3)]


def test_interrupted_run_resumes_from_its_last_checkpoint(workdir, tiny, capsys):
    # a resumed run retraces the uninterrupted one exactly only if it picks up the data where it stopped
    # and restores the random state that dropout draws from
    over = tiny + ["trainer.max_steps=6", "trainer.log_every_n_steps=1", "lora.dropout=0.2"]
    FineTune(compose(over)).run()
    (uninterrupted,) = run_dirs(workdir)
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        InterruptedRun(compose(over)).run()
    interrupted = run_dirs(workdir)[-1]
    assert f"Continue with: python -m ftlab resume={interrupted.relative_to(workdir)}" in capsys.readouterr().out
    assert (interrupted / "checkpoints" / "last.ckpt").is_file() and not (interrupted / "metrics.json").exists()
    stats = FineTune(compose(over + ["resume=last"])).run()
    assert stats["steps"] == 6 and stats["resumed_from"] == str(interrupted.resolve() / "checkpoints/last.ckpt")
    resumed = run_dirs(workdir)[-1]
    assert [s for s, _ in train_losses(resumed)] == [2, 3, 4, 5]  # from the checkpoint at step 2 on
    expected = dict(train_losses(uninterrupted))
    for step, loss in train_losses(resumed):
        assert loss == pytest.approx(expected[step], rel=1e-5)
    assert files_under(interrupted) >= {"checkpoints/last.ckpt", ".hydra/config.yaml"}  # left as it was


@pytest.mark.process
def test_cli_resume_uses_the_saved_config(workdir, tiny):
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        InterruptedRun(compose(tiny + ["trainer.max_steps=6", "lora.r=4"])).run()
    (interrupted,) = run_dirs(workdir)
    result = run_cli(f"resume={interrupted}", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = run_dirs(workdir)[-1]
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["steps"] == 6  # the saved trainer.max_steps, not the default
    assert "r: 4" in (resumed / ".hydra" / "config.yaml").read_text()
    # the saved config has no groups to pick from: a group option is refused in one line, not a merge error
    refused = run_cli(f"resume={interrupted}", "quant=4bit", cwd=workdir)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "ftlab: error: quant=4bit: a saved run's config (--rerun, resume=) has no config groups to pick from; set its "
        "keys instead, quant.KEY=VALUE (python -m ftlab --help lists them)"
    ]


def test_a_run_never_writes_over_another(workdir, tiny, capsys):
    FineTune(compose(tiny)).run()
    (first,) = run_dirs(workdir)
    before = (first / "metrics.json").read_text()
    with pytest.raises(FtlabError, match="already holds a run"):
        FineTune(compose(tiny), run_dir=first).run()
    result = run_main(*tiny, f"hydra.run.dir={first}", capsys=capsys)
    assert result.returncode == 2 and "already holds files" in result.stderr
    assert (first / "metrics.json").read_text() == before


def test_runs_started_in_the_same_second_get_their_own_dirs(workdir):
    from ftlab.utils.files import new_run_dir

    dirs = [new_run_dir() for _ in range(3)]
    assert len(set(dirs)) == 3 and all(d.is_dir() for d in dirs)
    assert dirs[1].name == dirs[0].name + "-1" or dirs[1].name[:8] != dirs[0].name[:8]  # or the clock ticked


@pytest.mark.process
def test_rerun_from_saved_config_reproduces_the_losses(workdir, tiny):
    original = FineTune(compose(tiny + ["trainer.log_every_n_steps=1"])).run().run_dir.resolve()  # saves .hydra/
    long_form = run_cli(
        "--config-path",
        str(original / ".hydra"),
        "--config-name",
        "config",
        "hydra.run.dir=outputs/rerun/long",
        cwd=workdir,
    )
    assert long_form.returncode == 0, long_form.stderr[-3000:]
    short_form = run_cli("--rerun", str(original), "hydra.run.dir=outputs/rerun/short", cwd=workdir)
    assert short_form.returncode == 0, short_form.stderr[-3000:]
    for again in ("long", "short"):
        assert train_losses(workdir / "outputs" / "rerun" / again) == train_losses(original)


@pytest.mark.process
def test_unreachable_hub_model_fails_before_training_in_one_line(workdir):
    result = run_cli("model=llama3", "quant=4bit", cwd=workdir)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not fetch model 'meta-llama/Llama-3.1-8B-Instruct'" in lines[0]
    assert "HF_TOKEN" in lines[0] and "model.path=" in lines[0]
    assert not list((workdir / "outputs").glob("*/*"))


@pytest.mark.process
def test_a_missing_model_path_fails_in_one_line_and_leaves_nothing(workdir):
    result = run_cli("model=tiny", "model.path=/no/such/dir", cwd=workdir)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.path=/no/such/dir is not a directory" in lines[0], result.stderr
    assert "model.path=null" in lines[0]  # the fix
    assert not list((workdir / "outputs").glob("*/*"))  # no run dir, not even one holding train.log


@pytest.mark.parametrize(
    "options",
    [
        ["lora=dora", "model.gradient_checkpointing=true"],
        [
            "trainer.precision=bf16-mixed",
            "trainer.accumulate_grad_batches=2",
            "optim.warmup_steps=2",
            "optim.scheduler=linear",
        ],
        ["lora=attention", "optim.name=adamw_8bit", "trainer.val_every_n_steps=2", "lora.bias=lora_only"],
    ],
    ids=["dora-rslora-checkpointing", "bf16-accumulation-warmup", "attention-adamw8bit-midval"],
)
def test_tiny_runs_with_other_options(options, workdir, tiny):
    stats = FineTune(compose(tiny + options)).run()
    assert stats["steps"] == 4
    assert torch.isfinite(torch.tensor(stats["val_loss_after"]))
    rows = list(csv.DictReader(open(stats.run_dir / "logs" / "metrics.csv")))
    val_steps = [int(r["step"]) for r in rows if r["val/loss"]]
    if "trainer.val_every_n_steps=2" in options:
        assert len(val_steps) >= 3  # before, during and after training
    if "trainer.accumulate_grad_batches=2" in options:  # 4 steps of 2 micro-batches: 8 batches, ~2 epochs
        assert stats["epochs"] >= 1 and stats["tokens_seen"] > 7 * 4 * 40


def test_learning_rate_schedule():
    from ftlab.train.module import lr_lambda

    cosine = lr_lambda("cosine", warmup=2, total=10, floor=0.1)
    assert [round(cosine(s), 3) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert cosine(10) == pytest.approx(0.1) and cosine(6) == pytest.approx(0.55)
    linear = lr_lambda("linear", warmup=0, total=4, floor=0.0)
    assert [linear(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert lr_lambda("constant", warmup=0, total=4, floor=0.0)(3) == 1.0


def test_unknown_target_module_names_the_model_layers(workdir, tiny):
    with pytest.raises(FtlabError, match=r"lora.target_modules=\['nope_proj'\].*linear layers: .*q_proj"):
        FineTune(compose(tiny + ["lora.target_modules=[nope_proj]"])).run()
    assert not list((workdir / "outputs").glob("*/*"))


def test_stages_are_public_and_callable_one_by_one(workdir, tiny):
    ft = FineTune(compose(tiny))
    base, tokenizer = ft.load_base_model_and_tokenizer()
    peft_model = ft.get_peft_model(base)
    assert peft_model.get_nb_trainable_parameters()[0] > 0
    row = {"conversations": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    fmt = ft.data_format(row, "row 1")
    example = ft.apply_chat_template(tokenizer, ft.to_conversation(row, "row 1", fmt), "row 1", fmt)
    supervised = [t for t, label in zip(example["input_ids"], example["labels"]) if label != -100]
    assert fmt.name == "conversation" and tokenizer.decode(supervised) == "4<|im_end|>"


class QuestionAnswerRows(FineTune):
    """A user's own row format, by overriding one stage."""

    def to_conversation(self, row, where, fmt):
        return [{"role": "user", "content": row["q"]}, {"role": "assistant", "content": row["a"]}]


def test_a_stage_can_be_overridden_in_a_subclass(workdir, tiny, tmp_path):
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"q": f"{i} + 1?", "a": str(i + 1)}) + "\n" for i in range(30)))
    stats = QuestionAnswerRows(compose(tiny + [f"data.path={rows}"])).run()
    # 30 rows - 8 validation - 3 test (the default data group holds out 10% for testing)
    assert stats["train_examples"] == 19 and stats["steps"] == 4
