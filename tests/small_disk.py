"""Filling a (small, test-made) filesystem to the last byte: the registry's disk-full test and
``benchmarks/faults.py``'s disk-full scenario both do it (plain module, no pytest)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until its filesystem has no byte left; the file (remove it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
