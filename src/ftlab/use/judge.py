"""A judge model compares the base and the tuned model's answers to the same held-out prompts.

Each pair is judged twice, base as answer A and then tuned as answer A, so a judge that favours a position cancels
out. A judgment's verdict is its last [[A]], [[B]] or [[C]] (a tie); one without is counted as no verdict. A pair's
score is the mean over its verdicts of 1 (tuned better), 0.5 (tie) or 0 (base better); the win rate is the mean
score over the pairs that got a verdict, with a 95% bootstrap interval. Order agreement is the share of pairs
whose two verdicts name the same winner. Identical answers are a tie without asking.

Judgments are cached on disk, keyed by the judge (URL and model, or local model) and the exact prompt it read,
which holds the rubric, the question and both answers: a re-run costs nothing, and a changed rubric or answer is
judged anew. What a judgment cost is kept as it arrives, so a run that fails half-way has paid for that half only.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

from ftlab.use import intervals, remote
from ftlab.utils.errors import FtlabError
from ftlab.utils.files import write_json

RUBRIC = Path(__file__).resolve().parents[1] / "assets" / "judge_rubric.md"
PLACES = ("{question}", "{reference}", "{answer_a}", "{answer_b}")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
SCORE = {"tuned": 1.0, "tie": 0.5, "base": 0.0}


@dataclass
class Judge:
    name: str
    """Who judges, as the cache keys it: the endpoint's URL and model, or the local model's path, and the longest
    judgment asked for (a shorter limit may cut the verdict off)."""
    complete: Callable[[List[str], Callable[[int, str], None]], List[str]]
    """The judge's reply to each prompt (one user message each), calling back as each arrives."""


def rubric(path: Optional[str]) -> str:
    """The judging prompt: judge.rubric's file, or the shipped one; FtlabError when a placeholder is missing."""
    if path is None:
        return RUBRIC.read_text()
    file = Path(path).expanduser()
    if not file.is_file():
        raise FtlabError(f"judge.rubric={path}: no such file; give a text file with the judging prompt")
    text = file.read_text()
    missing = [p for p in PLACES if p not in text and p != "{reference}"]
    if missing:
        raise FtlabError(
            f"judge.rubric={path}: it has no {', '.join(missing)}; the prompt must show the question and both "
            "answers ({question}, {answer_a}, {answer_b}; {reference} is optional)"
        )
    return text


def conversation(messages: List[dict]) -> str:
    """The prompt's turns as the judge reads them."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def render(template: str, messages: List[dict], reference: str, a: str, b: str) -> str:
    values = {"{question}": conversation(messages), "{reference}": reference, "{answer_a}": a, "{answer_b}": b}
    return re.sub("|".join(re.escape(p) for p in PLACES), lambda m: values[m.group(0)], template)


def verdict(reply: str) -> Optional[str]:
    """ "A", "B" or "C" (tie): the reply's last [[X]]; None without one."""
    found = _VERDICT.findall(reply or "")
    return found[-1] if found else None


def outcome(order: str, letter: Optional[str]) -> Optional[str]:
    """Which model a verdict favours ("tuned", "base", "tie") given which was shown first ("base" or "tuned")."""
    if letter is None:
        return None
    if letter == "C":
        return "tie"
    first = letter == "A"
    return order if first else ("tuned" if order == "base" else "base")


class Cache:
    """One JSON file per judgment under `root`, named by the hash of the judge and the prompt."""

    def __init__(self, root: Path):
        self.root = root

    def key(self, judge: str, prompt: str) -> str:
        return hashlib.sha256(json.dumps([judge, prompt]).encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Optional[str]:
        file = self._file(key)
        return json.loads(file.read_text())["reply"] if file.is_file() else None

    def put(self, key: str, judge: str, reply: str) -> None:
        write_json(self._file(key), {"judge": judge, "reply": reply})  # written whole (files.atomic)


def compare(judge: Judge, template: str, prompts: list, base: list, tuned: list, cache: Cache, resamples: int, seed):
    """The judge section of a report, and each pair's judgments: (section, rows)."""
    orders = ("base", "tuned")  # which model is answer A
    identical = [b.strip() == t.strip() for b, t in zip(base, tuned)]
    jobs = []  # (pair index, order, prompt text)
    for i, (p, b, t) in enumerate(zip(prompts, base, tuned)):
        if identical[i]:
            continue
        for first in orders:
            a_text, b_text = (b, t) if first == "base" else (t, b)
            jobs.append((i, first, render(template, p.messages, p.reference, a_text, b_text)))
    keys = [cache.key(judge.name, text) for _, _, text in jobs]
    replies = [cache.get(k) for k in keys]
    todo = [j for j, r in enumerate(replies) if r is None]
    if todo:

        def done(n: int, reply: str) -> None:
            cache.put(keys[todo[n]], judge.name, reply)

        for j, reply in zip(todo, judge.complete([jobs[j][2] for j in todo], done)):
            replies[j] = reply
    rows = [
        {"where": p.where, "messages": p.messages, "reference": p.reference, "base": b, "tuned": t, "judgments": []}
        for p, b, t in zip(prompts, base, tuned)
    ]
    for (i, first, _), reply in zip(jobs, replies):
        letter = verdict(reply)
        rows[i]["judgments"].append(
            {"answer_a": first, "verdict": letter, "favours": outcome(first, letter), "reply": reply}
        )
    section = summary([r["judgments"] for r in rows], identical, resamples, seed)
    section.update(judge=judge.name, cached=len(jobs) - len(todo), asked=len(todo))
    return section, rows


def summary(judgments: List[List[dict]], identical: List[bool], resamples: int, seed: int) -> dict:
    """Win rate, its interval, wins/ties/losses and order agreement over the pairs (see the module's doc)."""
    scores, agree, both = [], 0, 0
    for pair, same in zip(judgments, identical):
        if same:
            scores.append(SCORE["tie"])
            continue
        favours = [j["favours"] for j in pair if j["favours"] is not None]
        if favours:
            scores.append(sum(SCORE[f] for f in favours) / len(favours))
        if len(favours) == 2:
            both += 1
            agree += favours[0] == favours[1]
    rate = intervals.mean_interval(scores, resamples, seed)
    return {
        "pairs": len(judgments),
        "identical": sum(identical),
        "no_verdict": sum(1 for pair in judgments for j in pair if j["verdict"] is None),
        "judged": len(scores),
        "wins": sum(s > 0.5 for s in scores),
        "ties": sum(s == 0.5 for s in scores),
        "losses": sum(s < 0.5 for s in scores),
        "win_rate": rate["mean"],
        "low": rate["low"],
        "high": rate["high"],
        "order_agreement": agree / both if both else None,
    }


def from_endpoint(j, seed: int) -> Judge:
    """judge.endpoint as a Judge: checked now (it answers, it serves judge.model), asked greedily."""
    server = remote.connect(j.endpoint, j.model, j.api_key_env, j.timeout, "judge.endpoint")
    settings = {"max_tokens": j.max_tokens, "temperature": 0.0, "seed": seed}

    def complete(texts: List[str], done) -> List[str]:
        asks = [[{"role": "user", "content": t}] for t in texts]
        return remote.chat(server, asks, settings, j.concurrency, "judging", done)

    return Judge(f"{server.url} {server.model} max_tokens={j.max_tokens}", complete)
