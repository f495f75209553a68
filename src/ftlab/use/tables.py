"""The Markdown tables of a report's benchmark and judge sections (report.py puts them under the main table)."""

from typing import List, Optional


def _num(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _signed(value: Optional[float]) -> str:
    return "" if value is None else f"{value:+.4f}"


def harness(section: dict) -> List[str]:
    """task | metric | base | tuned | change | 95% interval (or task | metric | model)."""
    rows = section["rows"]
    paired = any("difference" in r for r in rows)
    names = [n for n in ("base", "tuned", "model") if any(n in r for r in rows)]
    shots = ", ".join(f"{t}: {n}" for t, n in section["num_fewshot"].items())
    lines = [
        f"Benchmarks (lm-eval {section['lm_eval']}; few-shot {shots or 'n/a'}; seed {section['seed']}"
        + (f"; first {section['limit']} documents of each task" if section["limit"] else "")
        + ("; chat template" if section["chat_template"] else "")
        + ")",
        "",
        "| task | metric | " + " | ".join(names) + (" | change | 95% interval |" if paired else " |"),
        "|---|---|" + "---:|" * (len(names) + 2 * paired),
    ]
    for r in rows:
        cells = " | ".join(_num(r.get(n)) for n in names)
        extra = ""
        if paired:
            interval = f"{r['low']:+.4f} to {r['high']:+.4f}" if r.get("low") is not None else "n/a"
            extra = f" {_signed(r.get('difference'))} | {interval} |"
        lines.append(f"| {r['task']} | {r['metric']} | {cells} |" + extra)
    return lines


def judge(section: dict) -> List[str]:
    """The judge's verdicts on tuned vs base: win rate with its interval, wins/ties/losses, order agreement."""
    rate = section["win_rate"]
    interval = ""
    if rate is not None:
        interval = f" (95% interval {100 * section['low']:.1f}% to {100 * section['high']:.1f}%)"
    agreement = section["order_agreement"]
    return [
        f"Judge: {section['judge']}; {section['pairs']} pairs, each judged in both orders ({section['identical']} "
        f"with identical answers, tied without asking; {section['no_verdict']} judgments gave no verdict; "
        f"{section['asked']} asked now, {section['cached']} from the cache)",
        "",
        "| tuned vs base | |",
        "|---|---:|",
        f"| win rate (tie = half a win) | {'n/a' if rate is None else f'{100 * rate:.1f}%'}{interval} |",
        f"| tuned better / tie / base better | {section['wins']} / {section['ties']} / {section['losses']} |",
        f"| both orders agree | {'n/a' if agreement is None else f'{100 * agreement:.1f}%'} |",
    ]
