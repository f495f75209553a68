"""Parallel sweep trials: hydra.sweeper.n_jobs asks Optuna for several trials at once and launches them as one batch
through Hydra's launcher, each trial in its own run dir named by its number, the study never past n_trials."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import run_cli, run_main

TRIAL_LINE = re.compile(r"^ftlab sweep: trial (\d+): ", re.MULTILINE)  # one per trial the sweep recorded


def study(workdir):
    import optuna

    return optuna.load_study(study_name="lora", storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")


def trials(workdir) -> list:
    return sorted(study(workdir).trials, key=lambda t: t.number)


def assert_each_trial_in_its_own_run_dir(workdir, numbers) -> None:
    """Every trial's run dir exists once, named by the trial's number, and holds that trial's params."""
    sweep_dir = workdir / "outputs" / "sweeps" / "lora"
    assert sorted(p.name for p in sweep_dir.glob("trial-*")) == sorted(f"trial-{n}" for n in numbers)
    for t in trials(workdir):
        if t.number not in numbers:
            continue
        run = sweep_dir / f"trial-{t.number}"
        assert Path(t.user_attrs["run_dir"]).resolve() == run.resolve() and (run / "metrics.json").is_file()
        config = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert {key: OmegaConf.select(config, key) for key in t.params} == t.params


@pytest.mark.process
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_trials_run_once_each_in_their_own_run_dirs(launcher, workdir, sweep_args):
    # val_every_n_steps=1: each trial reports to the study from its own process, which proves the trial's
    # environment (TrialEnv) reached it there
    result = run_cli(
        *sweep_args,
        f"hydra/launcher={launcher}",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "trainer.val_every_n_steps=1",
        cwd=workdir,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    done = trials(workdir)
    assert [t.number for t in done] == [0, 1, 2] and {t.state.name for t in done} == {"COMPLETE"}
    assert len({tuple(sorted(t.params.items())) for t in done}) == 3  # no params ran twice
    assert sorted(TRIAL_LINE.findall(result.stdout)) == ["0", "1", "2"]  # each recorded once
    assert all(t.intermediate_values for t in done)
    assert_each_trial_in_its_own_run_dir(workdir, [0, 1, 2])
    log = result.stdout + result.stderr
    if launcher == "joblib":  # a batch of two, then the one trial left
        assert "is launching 2 jobs" in log and "is launching 1 jobs" in log
    else:  # one submitit job per trial
        assert len(list((workdir / "outputs" / "sweeps" / "lora").glob(".submitit/*/*_result.pkl"))) == 3


@pytest.mark.process
def test_n_jobs_never_takes_the_study_past_n_trials(workdir, sweep_args):
    import optuna

    from ftlab.config.compose import config_dir
    from ftlab.sweeps import space

    # two trials a previous sweep left in the study, with the lora preset's params
    (workdir / "outputs" / "sweeps").mkdir(parents=True)
    earlier = optuna.create_study(study_name="lora", storage=f"sqlite:///{workdir}/outputs/sweeps/optuna.db")
    preset = OmegaConf.load(Path(config_dir()) / "sweep" / "lora.yaml")
    distributions = space.parse(dict(preset.hydra.sweeper.params))
    for r in (4, 8):
        params = {"lora.r": r, "optim.lr": 1e-4, "data.batch_size": 4}
        earlier.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=5.5))
    args = [*sweep_args, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=4"]
    grow = run_cli(*args, cwd=workdir)
    assert grow.returncode == 0, grow.stderr[-2000:]
    assert "2 of 3 trials already there" in grow.stdout and TRIAL_LINE.findall(grow.stdout) == ["2"]
    assert [(t.number, t.state.name) for t in trials(workdir)][2] == (2, "COMPLETE")
    again = run_cli(*args, cwd=workdir)  # the finished sweep re-run: nothing more to run
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 of 3 trials already there" in again.stdout and TRIAL_LINE.findall(again.stdout) == []
    assert len(trials(workdir)) == 3


@pytest.mark.process
def test_a_trial_that_does_not_compose_fails_alone_and_its_batch_keeps_its_numbers(workdir, sweep_args):
    # the grid, shuffled by the preset's seed, gives trial 1 lora.r=abc, which cannot compose: it fails alone, and
    # trials 0 and 2 run, each in the run dir of its own number, around the gap it leaves in the batch
    result = run_cli(
        *sweep_args,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.sampler.name=grid",
        "lora.r=choice(4,abc,8)",
        "optim.lr=choice(1e-4)",
        "data.batch_size=choice(4)",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    done = trials(workdir)
    assert [t.state.name for t in done] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert [t.params["lora.r"] for t in done] == [4, "abc", 8]
    assert done[1].user_attrs["fail_reason"].startswith("ConfigCompositionException")
    assert_each_trial_in_its_own_run_dir(workdir, [0, 2])


def test_an_unknown_or_missing_launcher_is_one_line_naming_hydra_launcher(workdir, sweep_args, capsys):
    from hydra.errors import MissingConfigException

    from ftlab.config.compose import describe_compose_error

    result = run_main(*sweep_args, "hydra/launcher=nope", capsys=capsys)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ftlab: error: hydra/launcher=nope: no such option; choose one of: basic")
    # a launcher whose package is not installed is named with the package (here both are installed)
    missing = MissingConfigException("", missing_cfg_file="hydra/launcher/joblib", options=["basic"])
    assert describe_compose_error(missing) == (
        "hydra/launcher=joblib: no such option; choose one of: basic; joblib comes with hydra-joblib-launcher: "
        "pip install -e '.[launchers]' in the checkout"
    )
