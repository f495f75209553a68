"""`python -m ftlab.evaluate run=RUN [eval.*=...] [generation.*=...] [harness.tasks=[...]] [judge.*=...]
[endpoint=URL]`: the tuned model against its base model, as its users will judge it (docs/evaluation.md).

Both answer the same held-out examples: eval.split of the run's data, rebuilt from the saved config (same file,
seed and split sizes) by the recipe's own stages, the last assistant turn of each as the reference. On top:
  harness.tasks   standard benchmarks through lm-evaluation-harness, base vs tuned, paired intervals
  judge.*         a judge model's pairwise verdicts on the base and tuned answers (an endpoint, or a local model)
  endpoint=URL    the answers of any OpenAI-compatible server, scored beside the run's own
Servers, tasks and the rubric are checked before the model loads. The report (use/scoring.py) goes into
<run dir>/eval, whole or not at all; a later evaluation of the same run writes eval-2/, eval-3/ ...
"""

import json
from pathlib import Path
from typing import List, Optional

from ftlab.config.overrides import run_command
from ftlab.config.schema import EvaluateCommand
from ftlab.data.rows import data_label
from ftlab.use import harness, judge, remote, report, runs
from ftlab.utils.console import Stages, info, log, setup_logging
from ftlab.utils.errors import FtlabError
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
    setup_logging()
    run = runs.locate(options.run, overrides)
    judging = options.judge.endpoint is not None or options.judge.model is not None
    checks = options.endpoint.url is not None or judging or bool(run.cfg.harness.tasks)
    stages = Stages(
        ("Finding the run",)
        + (("Checking servers and benchmarks",) if checks else ())
        + ("Reading the examples", "Loading the model", "Evaluating")
        + (("Asking the endpoint",) if options.endpoint.url else ())
        + (("Running benchmarks",) if run.cfg.harness.tasks else ())
        + (("Judging",) if judging else ())
    )
    stages.start("Finding the run", options.run)
    out_dir = report_dir(run, options.output)
    if checks:
        stages.start("Checking servers and benchmarks")  # what can be refused is, before a model loads
    endpoint = _endpoint(options.endpoint)
    if judging and (run.adapter is None or not run.cfg.eval.compare_base):
        raise FtlabError(
            "judge.* compares the base model's answers with the tuned one's; give a run with an adapter "
            "(run=RUN_DIR) and keep eval.compare_base=true"
        )
    template = judge.rubric(options.judge.rubric) if judging else None
    remote_judge = judge.from_endpoint(options.judge, run.cfg.seed) if options.judge.endpoint else None
    tasks = harness.prepare(run.cfg.harness) if run.cfg.harness.tasks else None
    stages.start("Reading the examples", f"{run.cfg.eval.split} split")  # bad data fails before the model loads
    # torch, transformers and the recipe load here, once the command line is known to be good
    from ftlab.train.recipe import FineTune
    from ftlab.train.trained import Trained
    from ftlab.use import scoring

    recipe_cls = recipe_cls or FineTune
    trained = Trained(run, recipe_cls)
    examples, fingerprint = trained.examples()
    info(f"{len(examples)} examples from the {run.cfg.eval.split} split")
    trained_on = trained_fingerprint(run)
    if trained_on and trained_on != fingerprint:
        info(
            f"note: the data changed since training ({data_label(run.cfg.data)}); the "
            f"{run.cfg.eval.split} split may now hold rows the model was trained on"
        )
    stages.start("Loading the model", run.cfg.model.name)
    model = trained.model()
    info(f"precision: {trained.stages.precision}")
    stages.start("Evaluating", f"into {out_dir}")
    adapter = run.adapter is not None
    results = scoring.answer(model, trained.tokenizer, examples, run.cfg, adapter)
    prompts = [e.prompt for e in examples]
    doc = report.build(run.cfg, run.label, fingerprint, prompts, results)
    if endpoint is not None:
        stages.start("Asking the endpoint", f"{endpoint.model} at {endpoint.url}")
        settings = remote.settings(run.cfg.generation, run.cfg.seed)
        conversations = [p.messages for p in prompts]
        replies = remote.chat(endpoint, conversations, settings, options.endpoint.concurrency, "endpoint")
        results["endpoint"] = scoring.scored_replies(replies, examples)
        doc["scores"]["endpoint"] = results["endpoint"]["scores"]
        own = "tuned" if adapter else "model"
        same = sum(a.output == r for a, r in zip(results[own]["answers"], replies))
        doc["endpoint"] = {"url": endpoint.url, "model": endpoint.model, "identical": same, "compared_with": own}
    if tasks is not None:
        stages.start("Running benchmarks", ", ".join(run.cfg.harness.tasks))
        doc["harness"] = harness.run(tasks, model, trained.tokenizer, run.cfg, adapter)
    judgments = None
    if judging:
        stages.start("Judging", options.judge.endpoint or options.judge.model)
        chosen = remote_judge or _local_judge(options.judge, recipe_cls, run.cfg.seed)
        base, tuned = ([a.output for a in results[n]["answers"]] for n in ("base", "tuned"))
        cache = judge.Cache(Path(run.cfg.cache_dir).expanduser() / "judge")
        doc["judge"], judgments = judge.compare(
            chosen, template, prompts, base, tuned, cache, run.cfg.eval.bootstrap, run.cfg.seed
        )
    scoring.write(out_dir, doc, prompts, results, judgments)
    stages.finish()
    log.info(report.table(doc))
    log.info(f"ftlab: report in {out_dir / 'report.md'}")
    return doc


def _endpoint(e):
    """The checked server of endpoint=URL, or None."""
    if e.url is None:
        return None
    return remote.connect(e.url, e.model, e.api_key_env, e.timeout, "endpoint")


def _local_judge(j, recipe_cls, seed: int) -> judge.Judge:
    """judge.model as a local judge: any model ftlab.infer takes (dir, Hub id, run), greedy, in this process."""
    from omegaconf import OmegaConf

    from ftlab.train.trained import Trained
    from ftlab.use import generate

    found = runs.locate(j.model, [])
    trained = Trained(found, recipe_cls)
    model = trained.model()
    gen = OmegaConf.merge(found.cfg.generation, {"max_new_tokens": j.max_tokens, "do_sample": False})

    def complete(texts: List[str], done) -> List[str]:
        out = []
        for start in range(0, len(texts), gen.batch_size):
            batch = [trained.prompt([{"role": "user", "content": t}]) for t in texts[start : start + gen.batch_size]]
            for answer in generate.answers(model, trained.tokenizer, batch, gen, seed):
                done(len(out), answer.output)
                out.append(answer.output)
        return out

    where = Path(j.model).expanduser()
    return judge.Judge(f"local {where.resolve() if where.exists() else j.model} max_tokens={j.max_tokens}", complete)


def main(argv: Optional[List[str]] = None) -> None:
    run_command(
        argv,
        EvaluateCommand,
        "ftlab.evaluate",
        "score a tuned model against its base model: held-out answers, benchmarks, a judge, a server",
        evaluate,
    )


if __name__ == "__main__":
    main()
