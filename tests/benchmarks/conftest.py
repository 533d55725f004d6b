"""tests/benchmarks: the benchmarks' pure parts, imported as the scripts import each other (their
folder on the path: ``benchmarks/pipeline.py`` imports its sibling ``_procs`` and the rest)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
