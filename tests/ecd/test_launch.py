"""The launcher the demo and the process tests share (``ecd.launch``): a service that does not stop
on SIGTERM is aborted, and the error carries the end of its log with its threads' stacks, so a hang
seen once (in CI) says where it was."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ecd.errors import EcdError
from ecd.launch import _start, _stop, _stop_all

DEAF_TO_SIGTERM = """
import json, signal, threading
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(json.dumps({"ready": "deaf"}), flush=True)
def stuck_here():
    threading.Event().wait()
stuck_here()
"""


def test_a_service_deaf_to_sigterm_is_aborted_and_the_error_shows_its_stacks(tmp_path: Path) -> None:
    log = tmp_path / "deaf.log"
    proc, ready = _start([sys.executable, "-c", DEAF_TO_SIGTERM, "deaf"], log)
    assert ready == {"ready": "deaf"}
    with pytest.raises(EcdError) as e:
        _stop(proc, "deaf", timeout_s=0.5)
    assert proc.poll() is not None
    message = str(e.value)
    assert message.startswith(f"deaf did not stop within 0.5 s of SIGTERM; see {log}:")
    assert "Fatal Python error: Aborted" in message and "in stuck_here" in message


STOPS_WITH_3 = """
import json, signal, sys, threading
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
print(json.dumps({"ready": "x"}), flush=True)
threading.Event().wait()
"""


def test_a_service_that_stops_gives_its_exit_code(tmp_path: Path) -> None:
    proc, _ = _start([sys.executable, "-c", STOPS_WITH_3, "x"], tmp_path / "x.log")
    assert _stop(proc, "x") == 3 and proc.poll() == 3


def test_stopping_several_stops_each_though_one_will_not_and_raises_its_failure(tmp_path: Path) -> None:
    deaf, _ = _start([sys.executable, "-c", DEAF_TO_SIGTERM, "deaf"], tmp_path / "deaf.log")
    fine, _ = _start([sys.executable, "-c", STOPS_WITH_3, "x"], tmp_path / "x.log")
    with pytest.raises(EcdError, match="^deaf did not stop within 0.5 s of SIGTERM"):
        _stop_all([("deaf", deaf), ("x", fine)], timeout_s=0.5)
    assert deaf.poll() is not None and fine.poll() == 3
