"""A sweep's results from its storage alone: a table of trials, the best one as a command, and Optuna's plots.

    python -m ftlab.sweeps report [--storage URL] [--study NAME] [--out DIR]

The sweeper writes the same report when it finishes (report.md and the plots in the sweep dir).
"""

import warnings
from pathlib import Path
from typing import Optional

import matplotlib
import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as vis
from omegaconf import OmegaConf

from ftlab.config.compose import setup
from ftlab.config.schema import SweeperOptions
from ftlab.utils.errors import FtlabError
from ftlab.utils.files import atomic, outputs_root, sqlite_file, write_text

SWEEP_DIR, COMMAND = "ftlab_sweep_dir", "ftlab_command"  # study / trial attributes the sweeper sets
PLOTS = {
    "optimization_history.png": "plot_optimization_history",
    "param_importances.png": "plot_param_importances",
    "parallel_coordinate.png": "plot_parallel_coordinate",
}


def default_storage() -> str:
    """Where the sweeper keeps studies unless told otherwise: hydra.sweeper.storage's default, resolved."""
    setup()  # the default names the outputs root through ftlab's resolver
    return OmegaConf.create({"storage": SweeperOptions.storage}).storage


def load(storage: str, study_name: Optional[str]):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    database = sqlite_file(storage)
    if database is not None and not database.is_file():
        raise FtlabError(f"--storage {storage}: no such database; run a sweep first or point at its storage")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if study_name is None:
        if len(names) != 1:
            raise FtlabError(
                f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}); choose one with --study NAME"
            )
        study_name = names[0]
    if study_name not in names:
        raise FtlabError(f"no study '{study_name}' in {storage}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage)


def table(study) -> str:
    """Markdown: one row per trial, in order, and the best trial's command under it."""
    keys = sorted({k for t in study.trials for k in t.params})
    lines = [
        "| trial | " + " | ".join(keys) + " | value | state | duration | run dir |",
        "|---|" + "---|" * len(keys) + "---|---|---|---|",
    ]
    for t in sorted(study.trials, key=lambda t: t.number):
        params = [_show(t.params.get(k, "")) for k in keys]
        value = f"{t.value:.4f}" if t.value is not None else ""
        state = t.state.name + (f" ({t.user_attrs['fail_reason']})" if "fail_reason" in t.user_attrs else "")
        seconds = f"{t.duration.total_seconds():.0f}s" if t.duration else ""
        lines.append(
            f"| {t.number} | " + " | ".join(params) + f" | {value} | {state} | {seconds} | "
            f"{t.user_attrs.get('run_dir', '')} |"
        )
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        lines += [
            "",
            f"best: trial {best.number}, value {best.value:.4f}",
            f"    python -m ftlab {best.user_attrs.get(COMMAND, '')}".rstrip(),
            f"    python -m ftlab --rerun {best.user_attrs.get('run_dir')}",
        ]
    return "\n".join(lines)


def plots(study, out: Path) -> list:
    """Optuna's matplotlib plots as PNG files in `out`; those the study cannot support yet are skipped."""
    matplotlib.use("Agg")  # Optuna draws with pyplot; files only, no display
    written = []
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    for name, function in PLOTS.items():
        if not complete or (function == "plot_param_importances" and len(complete) < 2):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" notices on every call
            ax = getattr(vis, function)(study)
        figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        with atomic(out / name) as tmp:  # workers finishing together each write whole files
            figure.savefig(tmp, dpi=100)
        plt.close(figure)
        written.append(out / name)
    return written


def write(study, out: Optional[Path] = None) -> tuple:
    """report.md and the plots into `out` (default: the sweep dir the sweeper recorded); (text, files)."""
    out = Path(out or study.user_attrs.get(SWEEP_DIR) or outputs_root() / "sweeps" / study.study_name)
    text = table(study)
    write_text(out / "report.md", f"# sweep '{study.study_name}'\n\n{text}\n")
    return text, [out / "report.md"] + plots(study, out)


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
