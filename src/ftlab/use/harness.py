"""Standard benchmarks through lm-evaluation-harness (lm-eval 0.4), on the base model and the tuned one.

The loaded model, base and adapter, goes to the harness as it is (HFLM wraps the instance: 4-bit and local-path
runs alike); the base is the same model with the adapter switched off. Both see the same tasks, few-shot count,
seeds and document limit, so each document's two scores pair up, and the difference of their means gets a paired
bootstrap interval (intervals.py). Groups (mmlu) pool their subtasks' documents, as the harness weighs them.

Tasks are found in the harness's own folders, in ftlab's shipped ones (assets/harness: ftlab_facts, offline) and
in harness.include_path; they are loaded, data and all, before the model is, so a bad name or an unreachable
dataset stops the evaluation before anything heavy runs.
"""

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

from ftlab.use import intervals
from ftlab.utils.errors import FtlabError, first_line

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "harness"
INSTALL = "pip install -e '.[harness]' in a checkout, or pip install 'lm-eval>=0.4.9,<0.5'"


def shipped_jsonl(file: str, **_) -> "datasets.DatasetDict":  # noqa: F821 (named in the shipped task YAML)
    """A shipped task's rows (assets/harness/FILE) as its test split; read here, since a task YAML's data_files
    would be relative to the working directory, not to the YAML."""
    import datasets

    rows = [json.loads(line) for line in (SHIPPED / file).read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def prepare(h):
    """The harness's task index with ftlab's tasks and harness.include_path, every task loaded with its data now:
    an unknown name or an unreachable dataset fails before the model loads. Returns the index for `run`."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise FtlabError(f"harness.tasks needs lm-evaluation-harness; install it: {INSTALL}") from None
    paths = [str(SHIPPED)]
    if h.include_path is not None:
        own = Path(h.include_path).expanduser()
        if not own.is_dir():
            raise FtlabError(f"harness.include_path={h.include_path}: no such folder; give a folder of task YAML files")
        paths.append(str(own))
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its info lines would bury ftlab's stage lines
    # the harness's own 14,000 task files take seconds to index: only when a task is not among ours
    manager = TaskManager(include_path=paths, include_defaults=False)
    if not all(_knows(manager, name) for name in h.tasks):
        manager = TaskManager(include_path=paths)
    for name in h.tasks:
        if not _knows(manager, name):
            where = f" or in {h.include_path}" if h.include_path else ""
            raise FtlabError(
                f"harness.tasks: no task named '{name}' in lm-eval {_version()}{where}; list them with "
                "`python -m lm_eval ls tasks`, or add a folder of your own YAML tasks with harness.include_path=DIR"
            )
    try:
        manager.load(list(h.tasks))
    except Exception as e:
        raise FtlabError(
            f"harness.tasks={list(h.tasks)}: a task could not load its data ({first_line(e, 200)}); the harness's "
            "own tasks download from the Hugging Face Hub (HF_HUB_OFFLINE must be unset), or point a task of your "
            "own at local files with harness.include_path=DIR"
        ) from None
    return manager


def _knows(manager, name: str) -> bool:
    return name in manager.all_tasks or bool(manager.match_tasks([name]))


def run(manager, model, tokenizer, cfg, adapter: bool) -> dict:
    """The harness section of a report: each task's metrics for the base and the tuned model (or the model alone),
    with the tuned - base difference and its 95% interval."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    h, seed = cfg.harness, cfg.seed
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=h.batch_size)

    def evaluate() -> dict:
        return simple_evaluate(
            lm,
            tasks=list(h.tasks),
            task_manager=manager,
            num_fewshot=h.num_fewshot,
            limit=h.limit or None,
            bootstrap_iters=0,  # ftlab's own paired intervals replace the harness's per-model standard errors
            log_samples=True,
            apply_chat_template=h.chat_template,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )

    results = {}
    if adapter:
        with model.disable_adapter():  # the same weights minus the adapter: the only difference is the tuning
            results["base"] = evaluate()
    results["tuned" if adapter else "model"] = evaluate()
    return summary(results, h, seed, cfg.eval.bootstrap)


def summary(results: Dict[str, dict], h, seed: int, resamples: int) -> dict:
    """Rows of task, metric, each model's score and, with two models, the paired difference and its interval."""
    names = list(results)
    last = results[names[-1]]
    rows = []
    for task, metrics in last["results"].items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            per_model = {name: _per_doc(r, task, metric, filt) for name, r in results.items()}
            row = {"task": task, "metric": metric, "filter": filt}
            row.update({name: r["results"][task].get(key) for name, r in results.items()})
            own = per_model[names[-1]]
            if names == ["base", "tuned"] and own and per_model["base"]:
                docs = sorted(set(per_model["base"]) & set(per_model["tuned"]))
                paired = intervals.paired(
                    [per_model["base"][d] for d in docs], [per_model["tuned"][d] for d in docs], resamples, seed
                )
                row.update(difference=paired["difference"], low=paired["low"], high=paired["high"], n=paired["n"])
            elif own:
                row["n"] = len(own)
            rows.append(row)
    return {
        "tasks": list(h.tasks),
        "num_fewshot": dict(last.get("n-shot", {})),
        "limit": h.limit or None,
        "chat_template": h.chat_template,
        "seed": seed,
        "lm_eval": _version(),
        "versions": dict(last.get("versions", {})),
        "rows": rows,
    }


def _per_doc(result: dict, task: str, metric: str, filt: str) -> Optional[Dict[tuple, float]]:
    """{(task, doc_id): score} of one metric over a task's documents (a group's: its subtasks'), or None when the
    metric is not a mean of per-document numbers (a corpus-level BLEU, say) and so has no paired interval."""
    leaves = _leaves(result, task)
    out = {}
    for leaf in leaves:
        for sample in result.get("samples", {}).get(leaf, []):
            if sample.get("filter", "none") != filt:
                continue
            value = sample.get(metric)
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float)):
                return None
            out[(leaf, sample["doc_id"])] = float(value)
    if not out:
        return None
    reported = result["results"][task].get(f"{metric},{filt}")
    mean = sum(out.values()) / len(out)
    return out if reported is not None and abs(mean - reported) < 1e-6 else None


def _leaves(result: dict, task: str) -> List[str]:
    subtasks = result.get("group_subtasks", {}).get(task)
    if not subtasks:
        return [task]
    return [leaf for sub in subtasks for leaf in _leaves(result, sub)]


def _version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
