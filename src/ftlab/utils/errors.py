"""Errors a user can fix, and how every ftlab command exits on one.

An FtlabError's message is the whole story: one line naming the key, file or row, and the fix. Every command
(`python -m ftlab`, `ftlab.preview`, `ftlab.infer` ...) reports one through `exit_on_error`: that line on stderr,
exit status 2 for a bad config or command line and 1 for anything else. HYDRA_FULL_ERROR=1 shows the
traceback instead, as it does for Hydra's own errors.
"""

import os
import sys
from contextlib import contextmanager
from typing import NoReturn

from ftlab.utils.console import quiet_library_warnings


class FtlabError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class ConfigError(FtlabError):
    """The composed config or command line is invalid; raised before anything heavy runs or anything is written."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The gist of a library's error for a one-line message: its first non-empty line (they often run on
    over several lines: URLs, request ids, tracebacks of their own), or its type when it says nothing."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(error).__name__


class StepError(FtlabError):
    """A training step's own code failed on the data (a reward function): the run keeps a checkpoint of its last
    whole step, so it continues once that code is fixed."""


def exit_code(error: FtlabError) -> int:
    """2 for a bad config, the error's own code where it has one (128 + signal for a preempted run), else 1."""
    return 2 if isinstance(error, ConfigError) else getattr(error, "exit_code", 1)


def fail(error: FtlabError, prog: str) -> NoReturn:
    """Print `error` as `prog: error: ...` and exit with its code; re-raise it under HYDRA_FULL_ERROR=1."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"{prog}: error: {error}", file=sys.stderr)
    sys.exit(exit_code(error))


@contextmanager
def exit_on_error(prog: str):
    """The exit policy of every command: an FtlabError raised inside ends the process through `fail`, and its line is
    the only one on stderr (libraries' warnings are kept off it from here on)."""
    quiet_library_warnings()
    try:
        yield
    except FtlabError as e:
        fail(e, prog)
