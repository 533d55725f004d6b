"""tests/deploy: every file under deploy/ is checked by a real validator (deploy_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# The helpers sit beside the tests (pytest runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).resolve().parent))
