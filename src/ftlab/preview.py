"""`python -m ftlab.preview [overrides] [-n N]`: see the training data exactly as the model will, before training.

Loads the tokenizer and the data only (never model weights), through the same FineTune stages a run uses,
then prints N rendered training examples with the supervised tokens marked (a preference pair's prompt once, then
its chosen and rejected answers), token-length statistics, the
padding share with and without packing, and how many rows were dropped or skipped and why. The tokenized
data lands in the preprocessing cache, so the run that follows starts without re-tokenizing.
"""

import os
import sys
from typing import List, Optional

from ftlab.config.compose import compose
from ftlab.data.chat import IGNORE
from ftlab.model.source import tokenizer_source
from ftlab.train.recipe import FineTune
from ftlab.utils.console import log, setup_logging
from ftlab.utils.errors import ConfigError, exit_on_error

PROG = "ftlab.preview"
USAGE = "usage: python -m ftlab.preview [group=option ...] [key=value ...] [-n N]   (N examples, default 3)"


def marked(tokenizer, example: dict, color: bool) -> str:
    """The example's text with its supervised tokens wrapped: green on a terminal, [[...]] elsewhere."""
    start, end = ("\033[1;32m", "\033[0m") if color else ("[[", "]]")
    ids, labels = example["input_ids"], example["labels"]
    pieces, run, run_supervised = [], [], None
    for token, label in list(zip(ids, labels)) + [(None, None)]:
        supervised = label is not None and label != IGNORE
        if run and (token is None or supervised != run_supervised):
            text = tokenizer.decode(run)
            pieces.append(f"{start}{text}{end}" if run_supervised else text)
            run = []
        run.append(token)
        run_supervised = supervised
    return "".join(pieces)


def pair(tokenizer, example: dict, i: int, color: bool) -> str:
    """A preference pair: the prompt they share once, then the chosen and the rejected answer, scored tokens
    marked."""
    chosen = {"input_ids": example["input_ids"], "labels": example["labels"]}
    rejected = {"input_ids": example["rejected_ids"], "labels": example["rejected_labels"]}
    shared = 0  # the prompt: the tokens both sides open with, up to the first scored one
    while (
        shared < min(len(chosen["input_ids"]), len(rejected["input_ids"]))
        and chosen["input_ids"][shared] == rejected["input_ids"][shared]
        and chosen["labels"][shared] == IGNORE
    ):
        shared += 1
    counts = [sum(label != IGNORE for label in side["labels"]) for side in (chosen, rejected)]
    lines = [
        f"\n── pair {i}: prompt {shared} tokens; chosen {counts[0]} scored, rejected {counts[1]} scored ──",
        tokenizer.decode(chosen["input_ids"][:shared]),
    ]
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        rest = {k: v[shared:] for k, v in side.items()}
        lines.append(f"── {name}: " + marked(tokenizer, rest, color).rstrip("\n"))
    return "\n".join(lines)


def preview(overrides: List[str], n: int = 3, color: bool = False, recipe_cls=FineTune) -> None:
    """Print what `recipe_cls` (FineTune, or a subclass with stages of its own) makes of the data."""
    setup_logging()
    ft = recipe_cls(compose(overrides))
    ft.tokenizer = ft.load_tokenizer(*tokenizer_source(ft.cfg.model, ft.cfg.cache_dir))
    ft.prepare_data()
    train = ft.prepared.splits["train"].items
    legend = "green" if color else "[[like this]]"
    log.info(f"\nfirst {min(n, len(train))} training examples; supervised tokens (those with a loss) {legend}:")
    for i, example in enumerate(train[:n], start=1):
        if "rejected_ids" in example:
            log.info(pair(ft.tokenizer, example, i, color))
            continue
        supervised = sum(label != IGNORE for label in example["labels"])
        judged = "" if "desirable" not in example else ", desirable" if example["desirable"] else ", undesirable"
        log.info(f"\n── example {i}: {len(example['input_ids'])} tokens, {supervised} supervised{judged} ──")
        log.info(marked(ft.tokenizer, example, color))
    for reason in ft.prepared.skipped[:5]:
        log.info(f"skipped: {reason}")


def main(argv: Optional[List[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(USAGE)
        return
    with exit_on_error(PROG):
        n = 3
        for flag in ("-n", "--examples"):
            if flag in args:
                i = args.index(flag)
                if i + 1 >= len(args) or not args[i + 1].isdigit():
                    raise ConfigError(f"{flag} needs a number of examples; {USAGE}")
                n = int(args[i + 1])
                del args[i : i + 2]
        preview(args, n, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ)


if __name__ == "__main__":
    main()
