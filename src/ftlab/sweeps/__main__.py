"""`python -m ftlab.sweeps report [--storage URL] [--study NAME] [--out DIR]`: a sweep's results from its storage."""
import argparse
import sys

from ftlab.errors import FtlabError
from ftlab.sweeps import report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ftlab.sweeps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="table of trials, best trial, plots")
    rep.add_argument("--storage", default=report.DEFAULT_STORAGE, help=f"Optuna storage URL ({report.DEFAULT_STORAGE})")
    rep.add_argument("--study", default=None, help="study name (needed when the storage holds several)")
    rep.add_argument("--out", default=None, help="where report.md and the plots go (default: the sweep dir)")
    args = parser.parse_args(argv)
    try:
        study = report.load(args.storage, args.study)
        text, files = report.write(study, args.out)
    except FtlabError as e:
        print(f"ftlab.sweeps: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(text)
    print("\nwritten: " + ", ".join(str(f) for f in files))


if __name__ == "__main__":
    main()
