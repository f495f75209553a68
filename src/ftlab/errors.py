"""Errors a user can fix. Their message is the whole story: one line naming the key, file or row."""


class FtlabError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


class ConfigError(FtlabError):
    """The composed config is invalid; raised before anything heavy runs or anything is written."""
