"""The ``ecd`` CLI end to end: errors are one line, no traceback, non-zero exit (in process, but for the services: tests/cli.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli import ecd, ecd_process  # ecd_process: the services start their asyncio machinery and signal handlers

from ecd.manifest import Manifest



def assert_clean_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("ecd: error: "), proc.stderr
    for needle in needles:
        assert needle in proc.stderr


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
    """A port in use, an option that is not one, a bad position: one line naming the field, exit 2."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_clean_error(ecd_process("cloud-server", "--port", str(port), "--metrics-port", "-1", "--db", str(tmp_path / "a.db")),
                           "port", f"127.0.0.1:{port}")
        assert_clean_error(ecd_process("cloud-server", "--port", "0", "--metrics-port", str(port), "--db", str(tmp_path / "b.db")),
                           "metrics_port", f"127.0.0.1:{port}")
    config = tmp_path / "cloud.toml"
    config.write_text("colour = 1\n")
    assert_clean_error(ecd_process("cloud-server", "--config", str(config)), "colour", "unknown option")
    assert_clean_error(ecd_process("cloud-server", "--placement-method", "best", "--db", str(tmp_path / "c.db")), "placement_method")
    assert_clean_error(ecd_process("edge-node", "--position", "north", "--cloud", "127.0.0.1:1"), "position")
