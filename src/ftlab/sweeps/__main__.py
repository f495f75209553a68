"""`python -m ftlab.sweeps report [--storage URL] [--study NAME] [--out DIR]`: a sweep's results from its storage."""

import argparse

from ftlab.sweeps import summary
from ftlab.utils.errors import exit_on_error

PROG = "ftlab.sweeps"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="table of trials, best trial, plots")
    default = summary.default_storage()
    rep.add_argument("--storage", default=default, help=f"Optuna storage URL ({default})")
    rep.add_argument("--study", default=None, help="study name (needed when the storage holds several)")
    rep.add_argument("--out", default=None, help="where report.md and the plots go (default: the sweep dir)")
    args = parser.parse_args(argv)
    with exit_on_error(PROG):
        text, files = summary.write(summary.load(args.storage, args.study), args.out)
    print(text)
    print("\nwritten: " + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
