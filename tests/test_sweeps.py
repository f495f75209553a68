"""Grid multiruns with Hydra's sweeper; Optuna searches that resume, survive failures and reject bad spaces."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from conftest import run_cli, run_dirs, run_main


def study(workdir, name="lora"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")


def states(workdir) -> list:
    return [t.state.name for t in sorted(study(workdir).trials, key=lambda t: t.number)]


@pytest.mark.process
def test_grid_multirun_runs_every_combination_as_a_normal_run(workdir, tiny):
    result = run_cli("-m", *tiny, "trainer.max_steps=1", "lora.r=4,8", "optim.lr=1e-4,3e-4", cwd=workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p.parent for p in workdir.glob("outputs/multirun/*/*/*/metrics.json"))
    assert len(runs) == 4
    assert all((r / "adapter" / "adapter_model.safetensors").is_file() for r in runs)
    configs = [OmegaConf.load(r / ".hydra" / "config.yaml") for r in runs]
    assert {(c.lora.r, c.optim.lr) for c in configs} == {(4, 1e-4), (4, 3e-4), (8, 1e-4), (8, 3e-4)}


@pytest.mark.process
def test_optuna_sweep_runs_trials_and_a_rerun_continues_the_study(workdir, sweep_args):
    first = run_cli(*sweep_args, "hydra.sweeper.n_trials=3", cwd=workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert states(workdir) == ["COMPLETE"] * 3
    for n in range(3):  # every trial is a normal run that can be re-run on its own
        run = workdir / "outputs" / "sweeps" / "lora" / f"trial-{n}"
        assert (run / "metrics.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
        if n > 0:  # the first trial tokenized the data (or found it cached); the others reuse it
            assert "tokenized data: from the cache" in (run / "train.log").read_text()
    assert "best: trial " in first.stdout and "python -m ftlab --rerun " in first.stdout
    params = [t.params for t in study(workdir).trials]
    assert all(set(p) == {"lora.r", "optim.lr", "data.batch_size"} for p in params)
    second = run_cli(*sweep_args, "hydra.sweeper.n_trials=5", cwd=workdir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "3 of 5 trials already there" in second.stdout
    assert sorted(t.number for t in study(workdir).trials) == [0, 1, 2, 3, 4]  # only the missing two ran
    assert [t.params for t in sorted(study(workdir).trials, key=lambda t: t.number)][:3] == params
    sweep_dir = workdir / "outputs" / "sweeps" / "lora"
    for name in ("report.md", "optimization_history.png", "param_importances.png", "parallel_coordinate.png"):
        assert (sweep_dir / name).stat().st_size > 0, name


@pytest.mark.process
def test_report_from_the_storage_alone(workdir, sweep_args):
    swept = run_cli(*sweep_args, "hydra.sweeper.n_trials=2", "data.batch_size=2", cwd=workdir)
    assert swept.returncode == 0, swept.stderr[-2000:]
    # a searched key given on the command line is pinned: out of the space, the same in every trial
    assert "pinned on the command line, not searched: data.batch_size=2" in swept.stdout
    assert all(set(t.params) == {"lora.r", "optim.lr"} for t in study(workdir).trials)
    for trial in study(workdir).trials:
        saved = OmegaConf.load(
            workdir / "outputs" / "sweeps" / "lora" / f"trial-{trial.number}" / ".hydra" / "config.yaml"
        )
        assert saved.data.batch_size == 2
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    storage = f"sqlite:///{workdir}/outputs/sweeps/optuna.db"
    result = subprocess.run(
        [sys.executable, "-m", "ftlab.sweeps", "report", "--storage", storage, "--out", str(workdir / "report")],
        cwd=workdir.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "COMPLETE" in line]
    assert len(rows) == 2 and all("trial-" in row for row in rows)  # number, params, value, state, time, run dir
    best = study(workdir).best_trial
    assert f"best: trial {best.number}, value {best.value:.4f}" in result.stdout
    assert f"python -m ftlab --rerun {best.user_attrs['run_dir']}" in result.stdout
    assert "python -m ftlab sweep=lora model=tiny" in result.stdout  # the best trial as an override line
    assert {p.name for p in (workdir / "report").iterdir()} == {
        "report.md",
        "optimization_history.png",
        "param_importances.png",
        "parallel_coordinate.png",
    }
    missing = subprocess.run(
        [sys.executable, "-m", "ftlab.sweeps", "report", "--storage", storage, "--study", "nope"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        missing.returncode == 1
        and missing.stderr.strip() == f"ftlab.sweeps: error: no study 'nope' in {storage}; it holds: lora"
    )


@pytest.mark.process
def test_killed_sweep_rerun_marks_the_interrupted_trial_failed_and_finishes(workdir, sweep_args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "ftlab", *sweep_args, "hydra.sweeper.n_trials=3", "trainer.max_steps=400"]
    proc = subprocess.Popen(
        args, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    log = workdir / "outputs" / "sweeps" / "lora" / "trial-0" / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "[5/6] Training" in log.read_text()):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up, as with a lost machine
    proc.wait()
    assert states(workdir) == ["RUNNING"]
    rerun = run_cli(*sweep_args, "hydra.sweeper.n_trials=3", cwd=workdir)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "trial 0 was interrupted; marked FAILED" in rerun.stdout
    assert states(workdir) == ["FAIL", "COMPLETE", "COMPLETE"]  # n_trials counts the study's total
    assert study(workdir).trials[0].user_attrs["fail_reason"].startswith("interrupted")


@pytest.mark.process
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(workdir, sweep_args):
    # data.max_seq_len=4 leaves no example to learn from: that trial raises, the others run
    result = run_cli(
        *sweep_args,
        "hydra.sweeper.n_trials=4",
        "data.max_seq_len=choice(4,256)",
        "hydra.sweeper.sampler.name=grid",
        "lora.r=choice(4)",
        "optim.lr=choice(1e-4)",
        "data.batch_size=choice(4,8)",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    trials = study(workdir).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(trials) == 4 and len(failed) == 2
    assert all(t.params["data.max_seq_len"] == 4 for t in failed)
    assert all("no train example survives data.max_seq_len=4" in t.user_attrs["fail_reason"] for t in failed)
    assert "FAILED (FtlabError: no train example survives" in result.stdout


@pytest.mark.process
def test_too_many_failures_stop_the_sweep(workdir, sweep_args):
    result = run_cli(
        *sweep_args,
        "hydra.sweeper.n_trials=6",
        "data.max_seq_len=choice(4)",
        "hydra.sweeper.max_failure_rate=0.3",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert states(workdir) == ["FAIL"] * 2 and "stopping, 2 trials failed" in result.stdout


@pytest.mark.process
def test_a_clearly_bad_trial_is_pruned_promptly(workdir, sweep_args):
    # the grid (seeded) runs the good learning rate first; the second, which barely moves, lags it at the
    # first validation and stops there
    result = run_cli(
        *sweep_args,
        "trainer.max_steps=12",
        "trainer.val_every_n_steps=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner.name=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "hydra.sweeper.sampler.name=grid",
        "hydra.sweeper.sampler.seed=1",
        "optim.lr=choice(3e-2,1e-9)",
        "lora.r=choice(8)",
        "data.batch_size=choice(4)",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert states(workdir) == ["COMPLETE", "PRUNED"]
    pruned = study(workdir).trials[1]
    assert pruned.params["optim.lr"] == 1e-9 and list(pruned.intermediate_values) == [2]  # keyed by step
    metrics = json.loads((workdir / "outputs" / "sweeps" / "lora" / "trial-1" / "metrics.json").read_text())
    assert metrics["pruned_at_step"] == 2 and metrics["steps"] < 12  # stopped promptly, results kept
    assert "trial 1: lora.r=8 optim.lr=1e-09 data.batch_size=4 PRUNED at step 2" in result.stdout


def own_preset(folder, params: str) -> str:
    """A sweep preset of the user's own, in a folder outside the package: --config-dir FOLDER sweep=mine."""
    (folder / "sweep").mkdir(parents=True)
    (folder / "sweep" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /hydra/sweeper: ftlab_optuna\n"
        "hydra:\n  sweeper:\n    study_name: mine\n    n_trials: 2\n    pruner:\n      name: none\n"
        f"    params:\n      {params}\n"
    )
    return str(folder)


@pytest.mark.process
def test_a_preset_of_ones_own_from_a_folder_outside_the_package_runs(workdir, tiny):
    folder = own_preset(workdir / "presets", "lora.r: choice(4, 8)")
    result = run_cli("-m", "--config-dir", folder, "sweep=mine", *tiny, "trainer.max_steps=2", cwd=workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    trials = study(workdir, "mine").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 and all(set(t.params) == {"lora.r"} for t in trials)


def test_a_preset_of_ones_own_is_checked_like_the_shipped_ones(workdir, tiny, capsys):
    folder = own_preset(workdir / "presets", "lora.nope: choice(1, 2)")
    result = run_main("-m", "--config-dir", folder, "sweep=mine", *tiny, capsys=capsys)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "hydra.sweeper.params.lora.nope: lora.nope is not an ftlab option" in result.stderr
    shown = run_main("--config-dir", folder, "sweep=mine", *tiny, "--cfg", "hydra", capsys=capsys)
    assert shown.returncode == 0 and "study_name: mine" in shown.stdout, shown.stderr


def test_pinning_every_searched_key_leaves_nothing_to_sweep(workdir, sweep_args, capsys):
    result = run_main(*sweep_args, "lora.r=8", "optim.lr=1e-4", "data.batch_size=4", capsys=capsys)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "lora.r=8, optim.lr=1e-4, data.batch_size=4 pins every key of the search space" in result.stderr


@pytest.mark.parametrize(
    "override,expected",
    [
        ("trainer.val_every_n_steps=0", "prunes on intermediate validation losses; set trainer.val_every_n_steps"),
        ("lora.nope=choice(1,2)", "lora.nope is not an ftlab option"),
        ("optim.lr=tag(log,interval(0,1e-3))", "a log-scale interval needs a positive lower bound"),
        ("lora.r=choice()", "empty choice is not legal"),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials must be > 0"),
        ("hydra.sweeper.sampler.name=cmaes", "hydra.sweeper.sampler.name must be one of tpe, random, grid (got cmaes)"),
    ],
)
def test_invalid_search_spaces_are_rejected_before_any_trial(override, expected, workdir, sweep_args, capsys):
    result = run_main(*sweep_args, override, capsys=capsys)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (workdir / "outputs").exists()


@pytest.mark.process
def test_two_workers_share_one_study_on_postgresql(workdir, sweep_args, postgres_url):
    """Two processes run the same command against one PostgreSQL database: together they run exactly
    n_trials, none twice."""
    import uuid

    import optuna

    storage, name = postgres_url, f"ftlab_test_{uuid.uuid4().hex[:12]}"
    args = [
        sys.executable,
        "-m",
        "ftlab",
        *sweep_args,
        "hydra.sweeper.n_trials=5",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={name}",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    workers = [
        subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    try:
        assert all(w.returncode == 0 for w in workers), [o[-3000:] for o in outputs]
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
        assert all(t.state.name == "COMPLETE" for t in trials)
        ran = [o.count("ftlab sweep: trial ") for o in outputs]
        assert sum(ran) == 5 and min(ran) >= 1, ran  # both worked, and no trial ran twice
        assert len({t.user_attrs["ftlab_worker"] for t in trials}) == 2
    finally:
        optuna.delete_study(study_name=name, storage=storage)


@pytest.mark.process
@pytest.mark.parametrize("devices", [1, 2])
def test_a_trial_in_another_process_reports_and_is_pruned_through_the_storage(devices, workdir, tiny):
    """What a trial on another machine does: find its study by storage URL, name and number alone. On two ranks,
    rank 0 reports once per validation and both ranks stop at the step it was pruned at."""
    import optuna

    from ftlab.sweeps.env import STORAGE, STUDY, TRIAL
    from ftlab.sweeps.pruning import PRUNER_ATTR

    storage = f"sqlite:///{workdir}/shared.db"
    study_ = optuna.create_study(study_name="remote", storage=storage)
    study_.set_user_attr(PRUNER_ATTR, {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    study_.add_trial(optuna.trial.create_trial(value=0.1, intermediate_values=dict.fromkeys(range(1, 13), 0.1)))
    trial = study_.ask()  # RUNNING, as the sweeper leaves it while the job runs elsewhere
    env = {STORAGE: storage, STUDY: "remote", TRIAL: str(trial.number)}
    over = [*tiny, "trainer.max_steps=12", "trainer.val_every_n_steps=2", f"trainer.devices={devices}"]
    result = run_cli(*over, cwd=workdir, env_extra=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count(f"trial {trial.number} pruned at step 2") == 1
    reported = optuna.load_study(study_name="remote", storage=storage).trials[trial.number]
    assert reported.intermediate_values and min(reported.intermediate_values) == 2
    (run_dir,) = run_dirs(workdir)
    assert json.loads((run_dir / "metrics.json").read_text())["pruned_at_step"] == 2


def test_trials_of_dead_workers_elsewhere_are_failed_by_their_stale_heartbeat(workdir):
    import optuna

    from ftlab.sweeps.workers import BEAT, STALE_SECONDS, WORKER, fail_orphans

    s = optuna.create_study(study_name="beats", storage=f"sqlite:///{workdir}/beats.db")
    stale, live, _unstamped = s.ask(), s.ask(), s.ask()  # the third: not asked by an ftlab sweeper
    for t, beat in ((stale, time.time() - STALE_SECONDS - 1), (live, time.time())):
        t.set_user_attr(WORKER, "another-machine:4242")
        t.set_user_attr(BEAT, beat)
    fail_orphans(s, logging.getLogger("test"))
    assert [t.state.name for t in s.trials] == ["FAIL", "RUNNING", "RUNNING"]
    assert "no heartbeat from another-machine:4242" in s.trials[0].user_attrs["fail_reason"]
