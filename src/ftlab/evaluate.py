"""`python -m ftlab.evaluate run=RUN [eval.*=...] [generation.*=...]`: the tuned model against its base model.

Both answer the same held-out examples: eval.split of the run's data, rebuilt from the saved config (same file,
seed and split sizes) by the recipe's own stages, the last assistant turn of each as the reference. The report
(use/scoring.py) goes into <run dir>/eval; a later evaluation of the same run writes eval-2/, eval-3/ ...;
nothing is written over.
"""

import json
from pathlib import Path
from typing import List, Optional

from ftlab.config.overrides import run_command
from ftlab.config.schema import EvaluateCommand
from ftlab.use import runs
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.files import new_output, new_run_dir, outputs_root, unused_path


def report_dir(run: runs.Run, output: Optional[str]) -> Path:
    """The new folder this evaluation writes: `output`, else <run dir>/eval (eval-2 ... once taken), else a new
    <outputs>/eval/DATE/TIME."""
    if output is not None:
        return new_output(Path(output).expanduser(), "a report")
    if run.run_dir is None:
        path = new_run_dir(outputs_root() / "eval")
        path.rmdir()  # claimed the name; the report is written whole, then renamed into it
        return path
    return unused_path(run.run_dir / "eval")


def trained_fingerprint(run: runs.Run) -> Optional[str]:
    """The data fingerprint the run's training recorded in metrics.json, if there is one to compare with."""
    metrics_file = run.run_dir / "metrics.json" if run.run_dir else None
    if metrics_file is None or not metrics_file.is_file():
        return None
    return json.loads(metrics_file.read_text()).get("data_fingerprint")


def evaluate(options: EvaluateCommand, overrides: List[str], recipe_cls=None) -> dict:
    """The report of one evaluation; `recipe_cls`: FineTune, or the subclass whose stages trained the run."""
    # torch, transformers and the recipe load here, once the command line is known to be good
    from ftlab.train.recipe import FineTune
    from ftlab.train.trained import Trained
    from ftlab.use import report, scoring

    setup_logging()
    stages = Stages(("Finding the run", "Reading the examples", "Loading the model", "Evaluating"))
    stages.start("Finding the run", options.run)
    run = runs.locate(options.run, overrides)
    out_dir = report_dir(run, options.output)
    stages.start("Reading the examples", f"{run.cfg.eval.split} split")  # bad data fails before the model loads
    trained = Trained(run, recipe_cls or FineTune)
    examples, fingerprint = trained.examples()
    info(f"{len(examples)} examples from the {run.cfg.eval.split} split")
    trained_on = trained_fingerprint(run)
    if trained_on and trained_on != fingerprint:
        info(
            f"note: the data changed since training ({run.cfg.data.path or run.cfg.data.name}); the "
            f"{run.cfg.eval.split} split may now hold rows the model was trained on"
        )
    stages.start("Loading the model", run.cfg.model.name)
    model = trained.model()
    info(f"precision: {trained.stages.precision}")
    stages.start("Evaluating", f"into {out_dir}")
    doc = scoring.evaluate(
        model, trained.tokenizer, examples, run.cfg, out_dir, run.label, fingerprint, adapter=run.adapter is not None
    )
    stages.finish()
    log.info(report.table(doc))
    log.info(f"ftlab: report in {out_dir / 'report.md'}")
    return doc


def main(argv: Optional[List[str]] = None) -> None:
    run_command(argv, EvaluateCommand, "ftlab.evaluate", "score a tuned model against its base model", evaluate)


if __name__ == "__main__":
    main()
