"""SIGINT/SIGTERM as one clean exception: a long job stops where it is and the CLI prints one line.

`raise_on_sigterm()` turns SIGTERM into `Terminated` (a `KeyboardInterrupt`), so both signals unwind through
the same `except KeyboardInterrupt` paths (temp files removed, checkpoints left as they were). A job that
knows where the user can resume re-raises `Interrupted(message, signum)`; `cli_main` prints the message and
exits 128 + signal number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """An interrupt with a message for the user (e.g. where the last checkpoint is and how to resume)."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


class Terminated(Interrupted):
    """SIGTERM, raised in the main thread by the handler `raise_on_sigterm` installs."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, signal.SIGTERM)


def interrupt_exit_code(e: BaseException) -> int:
    """128 + the signal number: 130 for SIGINT (and a plain `KeyboardInterrupt`), 143 for SIGTERM."""
    return 128 + (e.signum if isinstance(e, Interrupted) else int(signal.SIGINT))


def interrupt_signal(e: BaseException) -> int:
    """The signal number behind an interrupt (SIGINT for a plain `KeyboardInterrupt`)."""
    return e.signum if isinstance(e, Interrupted) else int(signal.SIGINT)


@contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
