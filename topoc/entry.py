"""The `topoc` command's entry point: SIGINT and SIGTERM handling first, then the CLI.

The handlers (topoc.interrupts) go in before the command line's modules are imported, so
a signal that arrives while they load (a few hundred milliseconds on a busy machine)
already exits 130 or 143 with one line, not a traceback from the middle of an import.
"""

from __future__ import annotations

import os
import sys

from topoc.interrupts import Interrupted, raise_on_signals


def main() -> None:
    raise_on_signals()
    try:
        from topoc.cli import main as cli_main
    except Interrupted as stopped:
        word = "interrupted" if stopped.exit_code == 130 else "terminated"
        try:
            sys.stderr.write(f"topoc: {word}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr is gone: the exit code says it
        os._exit(stopped.exit_code)
    cli_main()
