"""The quick start's one-liners run as the page writes them (docs/tutorials/quickstart.md, "First
commands, one at a time"), in an empty folder: a command renamed or an option dropped fails here.
``make demo`` and ``make test``, above them on the page, are CI's own run (.ci/run)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "tutorials" / "quickstart.md"
SECTION = "## First commands, one at a time"


def page_commands(text: str) -> list[list[str]]:
    """The ``ecd`` lines of the section's sh blocks, comments dropped, split as a shell would."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```sh\n")[1:]]
    return [shlex.split(line, comments=True) for b in blocks for line in b.splitlines() if line.strip()]


COMMANDS = page_commands(PAGE.read_text())


def test_the_section_has_the_commands() -> None:
    assert len(COMMANDS) >= 4 and all(c[0] == "ecd" for c in COMMANDS), COMMANDS


def test_page_commands_splits_as_a_shell() -> None:
    text = f"{SECTION}\n\n```sh\necd a 'b c'   # no\n\necd d\n```\n\n## next\n\n```sh\necd e\n```\n"
    assert page_commands(text) == [["ecd", "a", "b c"], ["ecd", "d"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:3]) for c in COMMANDS])
def test_the_command_runs_as_written(command: list[str], tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "ecd_cli", *command[1:]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{shlex.join(command)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip()
