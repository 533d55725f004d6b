"""One way for the tests to run the ``ecd`` command.

:func:`ecd` runs it in this process (``ecd_cli.main.main``): about a third of a subprocess's cost,
since nothing is imported again. It returns what ``subprocess.run`` would — the exit code, stdout and
stderr (the one-line ``ecd: error: ...`` and the log lines) — and puts back what ``main`` changes
(the root logger's level and handlers).

:func:`ecd_process` runs it as its own process, for the calls where the process boundary is the point:
a service that installs signal handlers and serves, an exit code seen by a shell, a clean interpreter.
Each caller says why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys

__all__ = ["ecd", "ecd_process"]


def ecd(*args: str) -> subprocess.CompletedProcess[str]:
    from ecd_cli.main import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.handlers = []  # so that main's logging.basicConfig sets the level and logs to (captured) stderr
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse: usage errors (2) and --help (0)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        root.handlers = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(["ecd", *args], code, out.getvalue(), err.getvalue())


def ecd_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecd_cli", *args], capture_output=True, text=True, timeout=timeout)
