"""python -m ftlab.evaluate and eval.after_train: base vs tuned on the same held-out rows, a report that agrees with
its own per-example records and with training's validation loss, nothing written over, a sweep on an eval metric."""

import json
import shutil

import pytest
from omegaconf import OmegaConf

from conftest import CHAT, run_cli, run_main, train_tiny
from ftlab import FineTune, compose
from ftlab.data.sources import Problems, assign_splits, read_file
from ftlab.use import metrics
from ftlab.utils.errors import FtlabError


@pytest.fixture
def evaluate(capsys):
    """The evaluate command in this process (its main)."""

    def run(*args):
        return run_main(*args, module="ftlab.evaluate", capsys=capsys)

    return run


@pytest.mark.process
def test_evaluate_writes_a_side_by_side_report_into_the_run(fresh_run, tmp_path):
    args = (f"run={fresh_run}", "eval.split=validation", "generation.max_new_tokens=6")
    result = run_cli(*args, cwd=tmp_path, module="ftlab.evaluate")  # the command in a process of its own
    assert result.returncode == 0, result.stderr[-2000:]
    folder = fresh_run / "eval"
    assert {p.name for p in folder.iterdir()} == {"report.json", "report.md", "generations.jsonl"}
    report = json.loads((folder / "report.json").read_text())
    assert report["split"] == "validation" and report["examples"] == 6 and set(report["scores"]) == {"base", "tuned"}
    # the same rows, tokens and weights as training's last validation: the same loss
    trained = json.loads((fresh_run / "metrics.json").read_text())
    assert report["scores"]["tuned"]["loss"] == pytest.approx(trained["val_loss_after"], rel=1e-4)
    assert report["scores"]["base"]["loss"] == pytest.approx(trained["val_loss_before"], rel=1e-4)
    assert report["scores"]["tuned"]["perplexity"] == pytest.approx(2.718281828 ** report["scores"]["tuned"]["loss"])
    rows = [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for name in ("base", "tuned"):  # the averages are the averages of the per-example scores shown
        per = [{k: r[name][k] for k in metrics.NAMES} for r in rows]
        assert per == metrics.per_example([r[name]["output"] for r in rows], [r["reference"] for r in rows])
        for key, value in metrics.mean(per).items():
            assert report["scores"][name][key] == pytest.approx(value)
    table = (folder / "report.md").read_text()
    assert "| metric | base | tuned | change |" in table and "| exact match |" in table and "| perplexity |" in table
    assert "| metric | base | tuned | change |" in result.stdout  # and on the console


def test_the_test_split_is_the_held_out_rows_of_the_saved_config(fresh_run, tmp_path, evaluate):
    result = evaluate(f"run={fresh_run}", "generation.max_new_tokens=4")
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = OmegaConf.load(fresh_run / ".hydra" / "config.yaml")
    splits = assign_splits({"train": read_file(CHAT, Problems())}, cfg.data.val_size, cfg.data.test_size, cfg.seed)
    rows = [json.loads(line) for line in (fresh_run / "eval" / "generations.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rows] == [where for where, _ in splits["test"]]
    assert not {r["where"] for r in rows} & {where for where, _ in splits["train"]}


def test_a_second_evaluation_writes_beside_the_first(fresh_run, tmp_path, evaluate):
    args = [f"run={fresh_run}", "eval.max_examples=2", "generation.max_new_tokens=3", "eval.compare_base=false"]
    first = evaluate(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    before = (fresh_run / "eval" / "report.json").read_text()
    second = evaluate(*args, "eval.split=validation")
    assert second.returncode == 0, second.stderr[-2000:]
    assert (fresh_run / "eval" / "report.json").read_text() == before
    report = json.loads((fresh_run / "eval-2" / "report.json").read_text())
    assert report["split"] == "validation" and report["examples"] == 2 and list(report["scores"]) == ["tuned"]
    taken = evaluate(*args, f"output={fresh_run / 'eval'}")
    assert taken.returncode == 1 and "already exists" in taken.stderr


def test_evaluating_without_a_test_split_says_how_to_make_one(tmp_path, cache_dir, evaluate):
    run = train_tiny(tmp_path / "run", cache_dir, "data.test_size=0", "trainer.max_steps=2")
    result = evaluate(f"run={run}")
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "eval.split=test: the data" in line and "has no test rows" in line
    assert "data.test_size=0.1" in line and "eval.split=validation" in line and not (run / "eval").exists()


def test_evaluating_after_the_data_changed_says_so(tmp_path, cache_dir, evaluate):
    data = tmp_path / "chat.jsonl"
    shutil.copy(CHAT, data)
    run = train_tiny(tmp_path / "run", cache_dir, f"data.path={data}", "trainer.max_steps=2")
    args = [f"run={run}", "eval.max_examples=1", "generation.max_new_tokens=2", "eval.compare_base=false"]
    same = evaluate(*args)
    assert same.returncode == 0 and "the data changed" not in same.stdout, same.stderr[-2000:]
    data.write_text(data.read_text() + CHAT.read_text().splitlines()[0] + "\n")
    changed = evaluate(*args)
    assert changed.returncode == 0 and "note: the data changed since training" in changed.stdout


def test_after_train_adds_the_scores_and_benchmarks_to_metrics_and_the_tracker(workdir, cache_dir):
    from mlflow.tracking import MlflowClient

    ft = FineTune(
        compose(
            [
                "model=tiny",
                f"data.path={CHAT}",
                "data.val_size=6",
                "data.test_size=4",
                "trainer.max_steps=3",
                "trainer.precision=32-true",
                f"cache_dir={cache_dir}",
                "eval.after_train=true",
                "generation.max_new_tokens=4",
                "tracker=mlflow",
                "harness.tasks=[ftlab_facts]",  # the benchmarks run after training too
                "harness.limit=4",
            ]
        )
    )
    stats = ft.run()
    saved = json.loads((stats.run_dir / "metrics.json").read_text())
    for key in (
        "eval_exact_match",
        "eval_token_f1",
        "eval_rouge_l",
        "eval_loss",
        "eval_perplexity",
        "base_eval_rouge_l",
        "base_eval_loss",
        "harness_ftlab_facts_acc",
        "base_harness_ftlab_facts_acc_norm",
    ):
        assert key in stats and saved[key] == stats[key]
    assert saved["eval_examples"] == 4 and saved["test_examples"] == 4
    report = json.loads((stats.run_dir / "eval" / "report.json").read_text())
    assert report["scores"]["tuned"]["rouge_l"] == saved["eval_rouge_l"]
    log = (stats.run_dir / "train.log").read_text()
    assert "[7/7] Evaluating" in log and "| metric | base | tuned | change |" in log
    client = MlflowClient(f"sqlite:///{workdir}/outputs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ftlab").experiment_id])
    assert run.data.metrics["eval_rouge_l"] == pytest.approx(saved["eval_rouge_l"])
    assert run.data.metrics["harness_ftlab_facts_acc"] == pytest.approx(saved["harness_ftlab_facts_acc"])
    assert [r["n"] for r in report["harness"]["rows"]] == [4, 4]
    assert "eval/report.md" in {a.path for a in client.list_artifacts(run.info.run_id, "eval")}


def test_after_train_without_the_split_fails_before_loading_the_model(workdir, cache_dir):
    ft = FineTune(
        compose(
            ["model=tiny", f"data.path={CHAT}", "data.test_size=0", f"cache_dir={cache_dir}", "eval.after_train=true"]
        )
    )
    with pytest.raises(FtlabError, match="eval.after_train=true scores the test split, and this data has no test rows"):
        ft.run()  # the data stage refuses it: the model is loaded after
    assert not list((workdir / "outputs").glob("*/*"))  # nothing left behind


@pytest.mark.process
def test_a_sweep_can_optimize_an_eval_metric(workdir, cache_dir, capsys):
    import optuna

    args = [
        "-m",
        "sweep=lora",
        "model=tiny",
        f"data.path={CHAT}",
        "data.val_size=6",
        "data.test_size=4",
        "trainer.max_steps=2",
        "trainer.precision=32-true",
        f"cache_dir={cache_dir}",
        "generation.max_new_tokens=3",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner.name=none",
        "hydra.sweeper.objective=eval_loss",
    ]
    refused = run_main(*args, capsys=capsys)
    assert refused.returncode == 2 and "hydra.sweeper.objective=eval_loss" in refused.stderr
    assert "eval.after_train=true" in refused.stderr
    benchmark = [a for a in args if "objective" not in a] + ["hydra.sweeper.objective=harness_ftlab_facts_acc",
                                                             "eval.after_train=true"]  # fmt: skip
    refused = run_main(*benchmark, capsys=capsys)
    assert refused.returncode == 2 and "add eval.after_train=true and its task to harness.tasks" in refused.stderr
    result = run_cli(*args, "eval.after_train=true", cwd=workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="lora", storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")
    for trial in study.trials:
        metrics_file = workdir / "outputs" / "sweeps" / "lora" / f"trial-{trial.number}" / "metrics.json"
        assert trial.value == pytest.approx(json.loads(metrics_file.read_text())["eval_loss"])
