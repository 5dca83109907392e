"""User-facing errors.

Anything raised as a :class:`DistillError` is a problem with the user's input (a name, a file, a value) and is
shown by the CLI as one line without a traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn


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
    """A stop asked for by a signal: Ctrl-C (SIGINT) or SIGTERM (what schedulers and containers send).

    The trainer raises it at a step boundary once a resumable checkpoint was written (at once on a second signal).
    A ``KeyboardInterrupt`` (not a :class:`DistillError`), so every caller that stops on Ctrl-C still does; the
    message says where training stopped and how to continue, ``signum`` which signal it was (the CLI exits with
    ``128 + signum``: 130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)

    def __reduce__(self) -> tuple[Any, ...]:  # keep ``signum`` through pickling (multiprocessing, DDP spawn)
        return type(self), (str(self), self.signum)


def terminate_handler(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM's counterpart of :func:`signal.default_int_handler`: raise :class:`Interrupted` instead of dying.

    The trainer treats it like Python's default, so it still defers SIGTERM to the next step boundary.
    """
    raise Interrupted(
        f"interrupted by {signal.Signals(signum).name}; rerun with --resume to continue from the last checkpoint",
        signum,
    )


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted` (exit 143 with one line) rather than killing silently.

    Only in the main thread and where SIGTERM still has its default action (SIG_DFL): a handler someone else
    installed is left alone. The previous handler is restored on exit.
    """
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, terminate_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
