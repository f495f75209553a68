"""Demo dataset for ftlab: rewrite a date mentioned in a sentence as ISO 8601 (YYYY-MM-DD).

Regenerate the shipped files with `python -m ftlab.data.demo` (a test checks they match byte for byte): demo.jsonl,
and demo_pairs.jsonl, its preference variant for method=dpo (and orpo, simpo).

Each row is a short sentence such as "Order 4821 shipped on the 3rd of March 1998." and the
expected answer is exactly "1998-03-03". The base SmolLM2-135M-Instruct almost never answers in
that exact form, while a short LoRA run learns the rule and generalises to unseen dates.
"""

import calendar
import json
import pathlib
import random

# Kept short on purpose: the system prompt is paid for on every training token budget, and
# giving our own system message also stops the chat template injecting its longer default one.
SYSTEM = "Reply only with the date, as YYYY-MM-DD."

MONTHS = list(calendar.month_name)[1:]  # stdlib, English regardless of locale
ABBREVS = [m[:3] for m in MONTHS]

# Several surface forms so the model has to learn the mapping (month name -> number,
# zero padding, reordering), not copy one fixed layout.
DATE_FORMATS = [
    "{d} {month} {y}",
    "{month} {d}, {y}",
    "the {ord} of {month} {y}",
    "{month} {ord}, {y}",
    "{abbr} {d}, {y}",
    "{d} {abbr} {y}",
]

# Some templates carry an unrelated number so that "find the date" is part of the task.
SENTENCES = [
    "The invoice was issued on {date}.",
    "Our meeting is set for {date}.",
    "She was born on {date}.",
    "The contract ends on {date}.",
    "Payment is due by {date}.",
    "The festival opens on {date}.",
    "Order {n} shipped on {date}.",
    "Room {n} is booked from {date}.",
    "Flight {n} was cancelled on {date}.",
    "Ticket {n} was closed on {date}.",
]


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def make_rows(n: int, seed: int) -> list[dict]:
    """Return n conversation rows with distinct dates, deterministic for a given seed."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        y, m = rng.randint(1950, 2049), rng.randint(1, 12)
        d = rng.randint(1, calendar.monthrange(y, m)[1])  # only real calendar dates
        if (y, m, d) in seen:  # distinct dates keep validation rows unseen in training
            continue
        seen.add((y, m, d))
        date = rng.choice(DATE_FORMATS).format(d=d, y=y, month=MONTHS[m - 1], abbr=ABBREVS[m - 1], ord=_ordinal(d))
        sentence = rng.choice(SENTENCES).format(date=date, n=rng.randint(100, 9999))
        rows.append(
            {
                "conversations": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": sentence},
                    {"role": "assistant", "content": f"{y:04d}-{m:02d}-{d:02d}"},
                ]
            }
        )
    return rows


def make_pairs(rows: list[dict]) -> list[dict]:
    """The preference variant of `rows` (method=dpo data=demo_pairs): the same prompts, the ISO date chosen and the
    sentence restated (what the base model tends to answer) rejected. Row i pairs row i, so the seeded split holds
    out the same prompts for validation and test as the SFT demo."""
    pairs = []
    for row in rows:
        system, user, answer = row["conversations"]
        restated = {"role": "assistant", "content": user["content"]}
        pairs.append({"prompt": [system, user], "chosen": [answer], "rejected": [restated]})
    return pairs


def is_correct(row: dict, output: str) -> bool:
    """Exact match after stripping whitespace; any extra word or punctuation counts as wrong."""
    return output.strip() == row["conversations"][-1]["content"].strip()


if __name__ == "__main__":
    assets = pathlib.Path(__file__).parent.parent / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    rows = make_rows(500, seed=0)
    for name, content in (("demo.jsonl", rows), ("demo_pairs.jsonl", make_pairs(rows))):
        with (assets / name).open("w", encoding="utf-8") as f:
            for row in content:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {assets / name}")
