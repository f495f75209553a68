"""An evaluation's results as a document (report.json), a side-by-side Markdown table (report.md, and the
console) and one line per example (generations.jsonl); and as the flat eval_* numbers of metrics.json."""

from typing import Dict, List

from ftlab.data.kinds import KINDS
from ftlab.data.rows import data_label
from ftlab.use import generate, intervals, metrics, tables

ROWS = (
    ("exact_match", "exact match", True),
    ("token_f1", "token F1", True),
    ("rouge_l", "ROUGE-L", True),
    ("loss", "loss", False),
    ("perplexity", "perplexity", False),
)  # (key, label, shown as a percentage): every report's; the kinds add their own scores' rows (rows())
SHOWN_EXAMPLES = 5


def rows() -> list:
    return list(ROWS) + [(key, label, percent) for kind in KINDS for key, (label, percent) in kind.reported.items()]


def build(cfg, label: str, fingerprint: str, prompts: list, results: Dict[str, dict]) -> dict:
    return {
        "run": label,
        "model": cfg.model.name,
        "data": data_label(cfg.data),
        "data_fingerprint": fingerprint,
        "split": cfg.eval.split,
        "examples": len(prompts),
        "generation": generate.settings(cfg.generation),
        "seed": cfg.seed,
        "train_on": cfg.data.train_on,
        "scores": {name: r["scores"] for name, r in results.items()},
        **({"intervals": changes(results, cfg.eval.bootstrap, cfg.seed)} if {"base", "tuned"} <= set(results) else {}),
    }


def changes(results: Dict[str, dict], resamples: int, seed: int) -> dict:
    """{metric: {"low", "high"}}: the 95% paired bootstrap interval of tuned - base for each answer score, example
    by example (intervals.py)."""
    base, tuned = results["base"]["per_example"], results["tuned"]["per_example"]
    out = {}
    for name in metrics.NAMES:
        paired = intervals.paired([b[name] for b in base], [t[name] for t in tuned], resamples, seed)
        out[name] = {"low": paired["low"], "high": paired["high"]}
    return out


PREFIX = {"base": "base_eval_", "tuned": "eval_", "model": "eval_", "endpoint": "endpoint_eval_"}


def flat(doc: dict) -> dict:
    """eval_<metric> of the evaluated model, base_eval_<metric> of its base and endpoint_eval_<metric> of a server,
    harness_<task>_<metric> and judge_win_rate: the numbers of metrics.json, the trackers and a sweep."""
    out = {}
    for name, scores in doc["scores"].items():
        out.update({PREFIX[name] + k: v for k, v in scores.items() if v is not None})
    out["eval_examples"] = doc["examples"]
    for row in doc.get("harness", {}).get("rows", []):
        suffix = f"{row['task']}_{row['metric']}" + ("" if row["filter"] == "none" else f"_{row['filter']}")
        for name, prefix in (("tuned", "harness_"), ("model", "harness_"), ("base", "base_harness_")):
            if row.get(name) is not None:
                out[prefix + suffix] = row[name]
    if doc.get("judge", {}).get("win_rate") is not None:
        out["judge_win_rate"] = doc["judge"]["win_rate"]
    if "endpoint" in doc:
        out["endpoint_identical"] = doc["endpoint"]["identical"]
    return out


def generations(prompts: list, results: Dict[str, dict]) -> List[dict]:
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"where": prompt.where, "messages": prompt.messages, "reference": prompt.reference}
        for name, r in results.items():
            row[name] = {"output": r["answers"][i].output, **r["per_example"][i]}
        rows.append(row)
    return rows


def _cell(value, percent: bool) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.4g}"


def _change(before, after, percent: bool) -> str:
    if before is None or after is None:
        return ""
    return f"{100 * (after - before):+.1f} pts" if percent else f"{after - before:+.4g}"


def table(doc: dict) -> str:
    """metric | base | tuned | change (or metric | model, for a model evaluated alone), a server's answers in a
    column of their own; then the benchmarks' and the judge's tables."""
    names = list(doc["scores"])
    compare = "base" in names and "tuned" in names
    # the change is the tuning's, tuned - base, beside them; a server's answers come after it
    columns = names[:2] + ["change"] + names[2:] if compare else names
    lines = [
        f"{doc['examples']} examples of the {doc['split']} split of {doc['data']}; "
        f"generation: {'sampling' if doc['generation']['do_sample'] else 'greedy'}, "
        f"max_new_tokens={doc['generation']['max_new_tokens']}",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    listed = rows()
    known = {key for key, _, _ in listed}
    # a method's own scores (GRPO's rewards), under their names
    listed += [(k, k.replace("_", " ", 1), False) for k in doc["scores"][names[0]] if k not in known]
    for key, label, percent in listed:
        values = {n: doc["scores"][n].get(key) for n in names}
        if (key, label, percent) not in ROWS and all(v is None for v in values.values()):  # a kind's, on its data only
            continue
        if compare:
            values["change"] = _change(values["base"], values["tuned"], percent)
        cells = [values[c] if c == "change" else _cell(values[c], percent) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if doc.get("intervals") and doc["examples"]:
        shown = [f"{label} {100 * i['low']:+.1f} to {100 * i['high']:+.1f} pts" for key, label, _ in ROWS
                 if (i := doc["intervals"].get(key)) and i["low"] is not None]  # fmt: skip
        lines += ["", f"95% intervals of the change (paired bootstrap over the {doc['examples']} examples): "
                  + ", ".join(shown)]  # fmt: skip
    if "endpoint" in doc:
        e = doc["endpoint"]
        lines += ["", f"endpoint: {e['model']} at {e['url']}; {e['identical']} of {doc['examples']} answers "
                  f"identical to the {e['compared_with']} model's"]  # fmt: skip
    if "harness" in doc:
        lines += ["", *tables.harness(doc["harness"])]
    if "judge" in doc:
        lines += ["", *tables.judge(doc["judge"])]
    return "\n".join(lines)


def _md(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return (text[:limit] + "…" if len(text) > limit else text).replace("|", "\\|")


def markdown(doc: dict, prompts: list, results: Dict[str, dict]) -> str:
    names = list(results)
    lines = [
        f"# Evaluation of {doc['run']}",
        "",
        f"Base model: {doc['model']}.",
        "",
        table(doc),
        "",
        "Exact match: the answer equals the reference (whitespace aside). Token F1: word overlap after "
        "lowercasing and dropping punctuation and articles. ROUGE-L: longest common subsequence F-measure. "
        f"Loss and perplexity: on the reference tokens (data.train_on={doc['train_on']})."
        + "".join(
            " " + kind.explained
            for kind in KINDS
            if any(key in s for key in kind.reported for s in doc["scores"].values())
        ),
        "",
        f"## First {min(SHOWN_EXAMPLES, len(prompts))} examples",
        "",
        "| prompt | reference | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for i, prompt in enumerate(prompts[:SHOWN_EXAMPLES]):
        answers = " | ".join(_md(results[n]["answers"][i].output) for n in names)
        lines.append(f"| {_md(prompt.messages[-1]['content'])} | {_md(prompt.reference)} | {answers} |")
    return "\n".join(lines) + "\n"
