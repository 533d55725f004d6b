"""The ``ecd`` CLI end to end: errors are one line, no traceback, non-zero exit (in process, but for the services: tests/cli.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from cli import ecd, ecd_process  # ecd_process: the services start their asyncio machinery and signal handlers

from ecd.manifest import Manifest

LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ecd")


def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str, code: int | None = None) -> None:
    assert proc.returncode != 0 if code is None else proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("ecd: error: ") == 1, proc.stderr
    before, error = proc.stderr.split("ecd: error: ")
    assert all(LOG_LINE.match(line) for line in before.splitlines()), before  # a service logs that it starts
    for needle in needles:
        assert needle in error


def test_inspect_json_is_the_manifest() -> None:
    proc = ecd("models", "inspect", "digits_cnn", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["schema"] == "ecd.manifest/1"
    assert d["model_id"] == "digits_cnn"
    assert [b["name"] for b in d["blocks"]] == ["conv1", "conv2", "conv3", "conv4", "fc", "classifier"]
    assert all(b["flops"] == 2 * b["macs"] for b in d["blocks"])


def test_inspect_table() -> None:
    proc = ecd("models", "inspect", "digits_cnn")
    assert proc.returncode == 0, proc.stderr
    assert "16x32x32" in proc.stdout and "classifier" in proc.stdout


def test_unknown_model() -> None:
    assert_clean_error(ecd("models", "inspect", "lenet9000"), "lenet9000", "digits_cnn", "resnet18")


def test_tampered_block(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    victim = bundled_copy / manifest.blocks[1].file
    victim.write_bytes(b"garbage")
    assert_clean_error(ecd("models", "check", str(bundled_copy), "--runs", "1"), manifest.blocks[1].file)


def test_check_fails_loudly_when_a_reference_disagrees(bundled_copy: Path) -> None:
    """The check can fail: swap two blocks' roles by corrupting the torch reference logits."""
    import numpy as np

    from ecd.manifest import sha256_bytes

    held = dict(np.load(bundled_copy / "heldout.npz"))
    held["torch_logits"] = held["torch_logits"][::-1].copy()
    np.savez_compressed(bundled_copy / "heldout.npz", **held)
    mpath = bundled_copy / "manifest.json"
    d = json.loads(mpath.read_text())
    d["heldout"]["sha256"] = sha256_bytes((bundled_copy / "heldout.npz").read_bytes())
    mpath.write_text(json.dumps(d))
    proc = ecd("models", "check", str(bundled_copy), "--runs", "1")
    assert proc.returncode == 1
    assert "MISMATCH" in proc.stdout and "FAILED" in proc.stderr


@pytest.mark.parametrize(
    "args,needles",
    [
        (["models", "build", "nope"], ["nope", "known models"]),
        (["models", "build", "digits_cnn", "--input-size", "64"], ["--input-size"]),
        (["models", "build", "resnet18", "--weights", "/nonexistent/w.pt"], ["--weights", "/nonexistent/w.pt"]),
    ],
)
def test_build_bad_input(args: list[str], needles: list[str], tmp_path: Path) -> None:
    assert_clean_error(ecd(*args, "--out", str(tmp_path / "out")), *needles)


def test_build_weights_that_do_not_fit(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    weights = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, weights)
    assert_clean_error(
        ecd("models", "build", "resnet18", "--weights", str(weights), "--out", str(tmp_path / "o")),
        "does not fit",
        "conv1.weight",
    )
    torch.save({"not_a_layer.weight": torch.zeros(1)}, weights)
    assert_clean_error(
        ecd("models", "build", "resnet18", "--weights", str(weights), "--out", str(tmp_path / "o")),
        "missing keys",
        "not_a_layer.weight",
    )


def test_services_refuse_bad_configuration_in_one_line(tmp_path: Path) -> None:
    """A port in use, an option that is not one, a bad position: one line naming the field, exit 78 (config)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_clean_error(ecd_process("cloud-server", "--insecure", "--port", str(port), "--metrics-port", "-1", "--db", str(tmp_path / "a.db")),
                           "port", f"127.0.0.1:{port}", code=78)
        assert_clean_error(ecd_process("cloud-server", "--insecure", "--port", "0", "--metrics-port", str(port), "--db", str(tmp_path / "b.db")),
                           "metrics_port", f"127.0.0.1:{port}", code=78)
    # refused while the configuration is read, before anything starts: in this process
    config = tmp_path / "cloud.toml"
    config.write_text("colour = 1\n")
    assert_clean_error(ecd("cloud-server", "--insecure", "--config", str(config)), "colour", "unknown option", code=78)
    assert_clean_error(ecd("cloud-server", "--insecure", "--placement-method", "best", "--db", str(tmp_path / "c.db")), "placement_method", code=78)
    assert_clean_error(ecd("edge-node", "--insecure", "--position", "north", "--cloud", "127.0.0.1:1"), "position", code=78)
    assert_clean_error(ecd("cloud-server", "--insecure", "--placement-debounce-s", "nan", "--db", str(tmp_path / "d.db")),
                       "placement_debounce_s", code=78)
    assert_clean_error(ecd("device-agent", "--insecure", "--answer-deadline-s", "-1"), "--answer-deadline-s", code=78)


def test_version_usage_and_config_errors_have_their_own_exit_codes(tmp_path: Path) -> None:
    """sysexits: a supervisor restarts an outage (69), never a typo (64) or a bad config file (78)."""
    version = ecd_process("--version")
    assert version.returncode == 0 and re.fullmatch(r"ecd \S+\n", version.stdout), version
    typo = ecd_process("cloud-server", "--prot", "1")
    assert typo.returncode == 64 and "unrecognized arguments: --prot 1" in typo.stderr
    config = tmp_path / "bad.toml"
    config.write_text("port = [\n")
    bad = ecd_process("edge-node", "--config", str(config))
    assert bad.returncode == 78 and bad.stderr.startswith("ecd: error: --config") and "Traceback" not in bad.stderr
    down = ecd_process("schedule", "placement", "--cloud", "127.0.0.1:1")
    assert down.returncode == 69 and down.stderr.startswith("ecd: error: UNAVAILABLE"), down.stderr


def service_log(*args: str) -> list[str]:
    """The log lines of an edge node that waits for a cloud that is not there, until SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-m", "ecd_cli", *args, "edge-node", "--insecure", "--cloud", "127.0.0.1:1", "--port", "0",
                             "--metrics-port", "-1"], stderr=subprocess.PIPE, text=True)
    lines = [proc.stderr.readline()]  # it logs that it starts once its signal handlers are in place
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, lines + rest.splitlines()
    return [line for line in lines + rest.splitlines() if line.strip()]


def test_log_lines_carry_an_iso_8601_time_or_are_one_json_object_each() -> None:
    lines = service_log()
    assert len(lines) >= 2 and "[edge-node] starting (pid" in lines[0] and "SIGTERM while starting" in lines[-1], lines
    assert all(LOG_LINE.match(line) for line in lines), lines
    records = [json.loads(line) for line in service_log("--log-format", "json")]
    assert len(records) >= 2 and all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert all(datetime.fromisoformat(r["time"]).tzinfo is not None for r in records)
    assert records[-1]["message"] == "[edge-node] SIGTERM while starting: stopping" and records[-1]["level"] == "INFO"
