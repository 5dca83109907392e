"""User-facing errors.

Anything raised as a :class:`DistillError` is a problem with the user's input (a name, a file, a value) and is
shown by the CLI as one line without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DistillError(Exception):
    """An error the user can act on: the message says what was wrong and what is expected."""


class ConfigError(DistillError, ValueError):
    """A recipe or override that does not fit the schema."""


class UnknownNameError(DistillError, KeyError):
    """A name that is not in a registry; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(DistillError):
    """Missing, malformed or inconsistent data."""


class CheckpointError(DistillError):
    """A checkpoint that is missing, corrupted, tampered with, or of another architecture."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised at a step boundary once a resumable checkpoint was written.

    A ``KeyboardInterrupt`` (not a :class:`DistillError`), so every caller that stops on Ctrl-C still does; the
    message says where training stopped and how to continue.
    """
