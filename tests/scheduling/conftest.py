"""tests/scheduling: the instance generators the tests share sit beside them (placement_cases.py,
allocation_cases.py; pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
