"""`python -m ftlab.preview [overrides] [-n N]`: see the training data exactly as the model will, before training.

Loads the tokenizer and the data only (never model weights), through the same FineTune stages a run uses,
then prints N rendered training examples with the supervised tokens marked, token-length statistics, the
padding share with and without packing, and how many rows were dropped or skipped and why. The tokenized
data lands in the preprocessing cache, so the run that follows starts without re-tokenizing.
"""
import os
import sys
from typing import List, Optional

from ftlab.chat import IGNORE
from ftlab.errors import ConfigError, FtlabError

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


def preview(overrides: List[str], n: int = 3, color: bool = False) -> None:
    from ftlab import model
    from ftlab.configure import compose
    from ftlab.console import log, setup_logging
    from ftlab.finetune import FineTune

    setup_logging()
    ft = FineTune(compose(overrides))
    ft.tokenizer = ft.load_tokenizer(*model.tokenizer_source(ft.cfg.model, ft.cfg.cache_dir))
    ft.prepare_data()
    train = ft.prepared.splits["train"].items
    legend = "green" if color else "[[like this]]"
    log.info(f"\nfirst {min(n, len(train))} training examples; supervised tokens (those with a loss) {legend}:")
    for i, example in enumerate(train[:n], start=1):
        supervised = sum(label != IGNORE for label in example["labels"])
        log.info(f"\n── example {i}: {len(example['input_ids'])} tokens, {supervised} supervised ──")
        log.info(marked(ft.tokenizer, example, color))
    for reason in ft.prepared.skipped[:5]:
        log.info(f"skipped: {reason}")


def main(argv: Optional[List[str]] = None) -> None:
    from ftlab.checks import describe_compose_error

    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(USAGE)
        return
    n = 3
    for flag in ("-n", "--examples"):
        if flag in args:
            i = args.index(flag)
            if i + 1 >= len(args) or not args[i + 1].isdigit():
                print(f"ftlab.preview: error: {flag} needs a number of examples\n{USAGE}", file=sys.stderr)
                sys.exit(2)
            n = int(args[i + 1])
            del args[i:i + 2]
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    try:
        try:
            preview(args, n, color)
        except (FtlabError, KeyboardInterrupt):
            raise
        except Exception as e:  # Hydra's composition errors (bad override, unknown option)
            if type(e).__module__.startswith(("hydra", "omegaconf")):
                raise ConfigError(describe_compose_error(e)) from None
            raise
    except FtlabError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"ftlab.preview: error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)


if __name__ == "__main__":
    main()
