"""JSON reading and writing shared by the schedulers' readers (``*/io.py``): one message for a file
that is missing, not text or not JSON, and one way to show a bad value in an error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load_json", "show", "write_json"]


def load_json(path: str | Path, error: type[Exception]) -> Any:
    """The JSON in ``path``; ``error`` (the reader's own class) names what is wrong with the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise error(f"instance: no such file {path}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a JSON text file") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def show(value: Any) -> str:
    """A bad value as an error message shows it: JSON, cut at 60 characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def write_json(path: str | Path, d: dict) -> Path:
    """Write one of the ``*_to_dict`` objects (or a result's ``to_dict()``) as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(d, indent=2) + "\n")
    return path
