"""Errors a user can fix. Their message is the whole story: one line naming the key, file or row."""


class FtlabError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class ConfigError(FtlabError):
    """The composed config is invalid; raised before anything heavy runs or anything is written."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The gist of a library's error for a one-line message: its first non-empty line (they often run on
    over several lines: URLs, request ids, tracebacks of their own), or its type when it says nothing."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(error).__name__
