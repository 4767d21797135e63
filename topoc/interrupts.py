"""SIGINT and SIGTERM as an exception, so every `finally` and cleanup runs.

The command line installs `raise_on_signals()` first thing: a signal then raises
`Interrupted` wherever the program is, the writer removes its staging folder, verify
tears down its namespaces, a deploy rolls back, and the CLI exits 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM: the shell's convention) without a traceback.
`Interrupted` derives from BaseException, not KeyboardInterrupt, so click's own ^C
handling ("Aborted!", exit 1, which means errors in the input) never sees it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The process got SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def raise_on_signals() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _raise)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while cleaning up (a second ^C must not leave the
    cleanup half done); they are delivered, and raise, when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
