"""`python -m ftlab.preview [overrides] [-n N]`: see the training data exactly as the model will, before training.

Loads the tokenizer and the data through the same FineTune stages a run uses (model weights only for a method
that samples its own answers: GRPO, whose preview samples the starting model and scores it with the rewards),
then prints N rendered training examples as their kind shows them (data/kinds/: supervised tokens marked; a
preference pair's prompt once, then its chosen and rejected answers; with data.sources each source's in turn, each
named), what each source gave the mix, token-length statistics, the padding share with and without packing, and
how many rows were dropped or skipped and why. The tokenized data lands in the preprocessing cache, so the run
that follows starts without re-tokenizing.
"""

import os
import sys
from typing import List, Optional

from ftlab.config.compose import compose
from ftlab.utils.console import log, setup_logging
from ftlab.utils.errors import ConfigError, exit_on_error

PROG = "ftlab.preview"
USAGE = "usage: python -m ftlab.preview [group=option ...] [key=value ...] [-n N]   (N examples, default 3)"


def preview(overrides: List[str], n: int = 3, color: bool = False, recipe_cls=None) -> None:
    """Print what `recipe_cls` (FineTune, or a subclass with stages of its own) makes of the data."""
    # the recipe (torch, transformers) loads here, once the command line is known to be good
    from ftlab.model.source import tokenizer_source
    from ftlab.train.recipe import FineTune

    setup_logging()
    ft = (recipe_cls or FineTune)(compose(overrides))
    tokenizer = ft.load_tokenizer(*tokenizer_source(ft.cfg.model, ft.cfg.cache_dir))
    prepared = ft.prepare_data(tokenizer).prepared
    train = prepared.splits["train"].items
    legend = "green" if color else "[[like this]]"
    origins = getattr(prepared, "origins", None)  # a mix (data.sources): the source of each example
    shown = _each_source_in_turn(origins, n) if origins else list(range(min(n, len(train))))
    which = "training examples, each source in turn" if origins else "training examples"
    log.info(f"\nfirst {len(shown)} {which}; supervised tokens (those with a loss) {legend}:")
    for i, k in enumerate(shown, start=1):
        log.info(prepared.examples.show(tokenizer, train[k], f"{i} from {origins[k]}" if origins else i, color))
    for reason in prepared.skipped[:5]:
        log.info(f"skipped: {reason}")
    if ft.method.samples:  # an online method learns from the model's own answers: show what the rewards make of them
        log.info(f"\nloading {ft.cfg.model.name} to sample from it ...")
        model = ft.load_base_model(ft.model_source())
        for line in ft.method.preview(ft.cfg.method, model, tokenizer, [train[k] for k in shown], ft.cfg.seed):
            log.info(line)


def _each_source_in_turn(origins: List[str], n: int) -> List[int]:
    """The indices of `n` training examples of a mix, taking each source's next in turn, so every source shows."""
    queues = {}
    for k, label in enumerate(origins):
        queues.setdefault(label, []).append(k)
    picked, depth = [], 0
    while len(picked) < n and any(depth < len(q) for q in queues.values()):
        picked += [q[depth] for q in queues.values() if depth < len(q)][: n - len(picked)]
        depth += 1
    return picked


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
