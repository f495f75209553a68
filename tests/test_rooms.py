"""The rooms that grow take a new member from outside ftlab, with no file of ftlab touched: a training method, a
data format and an export format (tests/toys.py) run through training, preview, evaluation, inference, export,
resume and a sweep; the preprocessing cache key covers every module of the data package without a list."""

import csv
import json
import shutil
import sys

import pytest

from conftest import ASSETS, run_cli, run_main, write_rows
from ftlab import FineTune, compose
from ftlab.data.formats import FORMATS
from ftlab.exports import EXPORTS
from ftlab.methods import METHODS
from toys import AskTell, Npz, Unlikelihood

PAIRS = ASSETS / "pairs.jsonl"


def logged(run_dir, column: str) -> list:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]


@pytest.fixture
def plugin(tmp_path):
    """A folder that, on PYTHONPATH, installs the toys as a package of one's own would: an entry point of each group."""
    dist = tmp_path / "plugin" / "ftlab_toys-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ftlab-toys\nVersion: 0.1\n")
    groups = ("ftlab.methods", "ftlab.data.formats", "ftlab.exports.formats")
    (dist / "entry_points.txt").write_text("".join(f"[{g}]\ntoys = toys_plugin\n\n" for g in groups))
    tests = str(ASSETS.parent)
    return {"PYTHONPATH": f"{dist.parent}:{tests}"}


def toy_method(cache_dir, *extra) -> list:
    return [
        "model=tiny",
        f"data.path={PAIRS}",
        "method=unlikelihood",
        "method.alpha=0.5",
        "data.val_size=8",
        "data.test_size=4",
        "data.batch_size=4",
        "trainer.max_steps=6",
        "optim.lr=3e-3",
        "lora.dropout=0.2",
        "trainer.precision=32-true",
        "trainer.checkpoint_every_n_steps=2",
        "trainer.log_every_n_steps=1",
        "generation.max_new_tokens=4",
        f"cache_dir={cache_dir}",
        *extra,
    ]


def test_a_method_from_outside_ftlab_runs_through_every_command(workdir, cache_dir, capsys):
    from test_train import InterruptedRun, train_losses

    with METHODS.added(Unlikelihood):
        over = toy_method(cache_dir)
        result = FineTune(compose(over + ["eval.after_train=true"])).run()
        run = result.run_dir.resolve()
        # it trained: the loss fell, its own metric was logged at every step and validated, the card names its key
        assert result["val_loss_after"] < result["val_loss_before"]
        assert 0 < result["val_unlikelihood_after"] < result["val_loss_after"]  # the term is part of the loss
        assert [s for s, _ in logged(run, "train/unlikelihood")] == list(range(6))
        card = (run / "README.md").read_text()
        assert "| `method.alpha` | 0.5 | method setting |" in card and "validation unlikelihood term after" in card
        assert result["eval_preference_accuracy"] is not None  # evaluated on its pairs after training
        # preview shows its pairs; the commands use the run
        from ftlab.preview import preview

        preview(over, n=1)
        assert "── pair 1: prompt " in capsys.readouterr().out
        evaluated = run_main(f"run={run}", "eval.max_examples=2", module="ftlab.evaluate", capsys=capsys)
        assert evaluated.returncode == 0 and (run / "eval-2" / "report.json").is_file(), evaluated.stderr
        answered = run_main(f"run={run}", "prompt=Double 4.", module="ftlab.infer", capsys=capsys)
        assert answered.returncode == 0 and "[3/3] Generating" in answered.stderr, answered.stderr
        exported = run_main(f"run={run}", module="ftlab.export", capsys=capsys)
        assert exported.returncode == 0 and (run / "merged" / "config.json").is_file(), exported.stderr
        # an interrupted run resumes where it stopped and retraces the uninterrupted one
        with pytest.raises((SystemExit, KeyboardInterrupt)):
            InterruptedRun(compose(over)).run()
        resumed = FineTune(compose(over + ["resume=last"])).run()
        assert [s for s, _ in train_losses(resumed.run_dir)] == [2, 3, 4, 5]
        expected = dict(train_losses(run))
        for step, loss in train_losses(resumed.run_dir):
            assert loss == pytest.approx(expected[step], rel=1e-5)
    with pytest.raises(Exception, match="method=unlikelihood: no such option"):
        compose(over) and FineTune(compose(over))  # gone with the with block


@pytest.mark.process
def test_a_method_from_an_installed_package_is_swept(workdir, cache_dir, plugin):
    import optuna

    shown = run_cli("--help", cwd=workdir, env_extra=plugin)
    assert "method=unlikelihood" in shown.stdout and "method.alpha=1.0" in shown.stdout
    args = ["-m"] + toy_method(cache_dir, "trainer.max_steps=2", "data.test_size=0", "lora.dropout=0")
    args += [
        "sweep=lora",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner.name=none",
        "method.alpha=choice(0.5,2.0)",
    ]
    result = run_cli(*args, cwd=workdir, env_extra=plugin)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        metrics = json.loads(
            (workdir / "outputs" / "sweeps" / "lora" / f"trial-{trial.number}" / "metrics.json").read_text()
        )
        assert trial.value == metrics["val_loss_after"] and "val_unlikelihood_after" in metrics
        assert "method.alpha" in trial.params


def test_a_data_format_from_outside_ftlab_is_read_by_every_command(workdir, cache_dir, tiny, capsys):
    rows = [{"ask": f"What is {i} plus {i}?", "tell": str(2 * i)} for i in range(40)]
    path = write_rows(workdir / "asks.jsonl", rows)
    with FORMATS.added(AskTell):
        over = [o for o in tiny if not o.startswith("data.path=")]
        over += [f"data.path={path}", "data.test_size=4", "generation.max_new_tokens=3"]
        result = FineTune(compose(over)).run()
        assert result["data_format"] == "ask-tell" and result.data.prepared.kind == "tokens"
        assert "data format: ask-tell (detected from the columns ask, tell" in capsys.readouterr().out
        run = result.run_dir.resolve()
        from ftlab.preview import preview

        preview(over, n=1)
        shown = capsys.readouterr().out
        assert "tokenized data: from the cache" in shown and "<|im_start|>assistant\n[[" in shown
        report = run_main(f"run={run}", module="ftlab.evaluate", capsys=capsys)
        assert report.returncode == 0, report.stderr
        generations = [json.loads(x) for x in (run / "eval" / "generations.jsonl").read_text().splitlines()]
        answers = {r["ask"]: r["tell"] for r in rows}
        assert len(generations) == 4 and all(
            g["reference"] == answers[g["messages"][-1]["content"]] for g in generations
        )
        prompts = write_rows(workdir / "p.jsonl", [{"ask": "What is 2 plus 2?", "tell": "4"}, {"ask": "And 3 plus 3?"}])
        answered = run_main(f"run={run}", f"input={prompts}", module="ftlab.infer", capsys=capsys)
        assert answered.returncode == 0, answered.stderr
        out = [json.loads(x) for x in (workdir / "p-outputs.jsonl").read_text().splitlines()]
        assert [o.get("reference") for o in out] == ["4", None]
        assert out[1]["messages"] == [{"role": "user", "content": "And 3 plus 3?"}]


def test_an_export_format_from_outside_ftlab_is_written_checked_and_refused_like_the_others(fresh_run, capsys):
    with EXPORTS.added(Npz):
        done = run_main(f"run={fresh_run}", "format=npz", module="ftlab.export", capsys=capsys)
        assert done.returncode == 0, done.stderr
        folder = fresh_run / "npz"
        assert {p.name for p in folder.iterdir()} == {"model.npz", "config.json", "export.json"}
        report = json.loads((folder / "export.json").read_text())
        assert report["dtype"] == "float32" and report["check"]["max_abs_diff"] <= report["check"]["tolerance"]
        assert "model.npz read back into a fresh model: logits within" in done.stdout
        assert f"ftlab: the merged weights in {folder / 'model.npz'}" in done.stdout
        refused = run_main(f"run={fresh_run}", "format=npz", "gguf.dtype=q8_0", module="ftlab.export", capsys=capsys)
        assert refused.returncode == 2 and "for format=npz set neither" in refused.stderr
    gone = run_main(f"run={fresh_run}", "format=npz", module="ftlab.export", capsys=capsys)
    assert gone.returncode == 2 and "format must be one of gguf, gguf-adapter, merged (got npz)" in gone.stderr


def test_the_cache_key_covers_every_module_of_the_data_package(tmp_path):
    from ftlab.data import cache

    package = tmp_path / "data"
    shutil.copytree(cache.DATA_PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = cache.code_fingerprint(package)
    assert cache.code_fingerprint(package) == before and before == cache.code_fingerprint()
    (package / "formats" / "mine.py").write_text('"""A format of my own."""\n')  # a module added: no list to update
    added = cache.code_fingerprint(package)
    (package / "formats" / "mine.py").write_text('"""A format of my own, changed."""\n')
    assert len({before, added, cache.code_fingerprint(package)}) == 3


def test_rooms_list_their_members_without_loading_torch():
    code = (
        "import sys; from ftlab.methods import METHODS; from ftlab.data.formats import FORMATS; "
        "from ftlab.tracking import TRACKERS; from ftlab.config.help import render; "
        "print(METHODS.names(), FORMATS.names(), TRACKERS.names()); render(); "
        "heavy = [m for m in ('torch', 'transformers', 'lightning', 'mlflow', 'wandb') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "['dpo', 'grpo', 'kto', 'orpo', 'sft', 'simpo']" in result.stdout and "['mlflow', 'wandb']" in result.stdout
