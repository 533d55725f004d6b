"""deploy/systemd: the units pass ``systemd-analyze verify`` and ``security``, the sysusers file passes
``systemd-sysusers``, and the config and env files resolve with the services' own option parser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploy_helpers import (
    DEPLOY,
    broken_copy,
    check_env,
    fails,
    ok,
    resolve_config,
    run,
    tool,
)

SYSTEMD = DEPLOY / "systemd"
UNITS = ["ecd-edge-node.service", "ecd-device-agent.service", "ecd-device-agent.timer"]
SERVICES = [u for u in UNITS if u.endswith(".service")]
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 = locked down, 10 = exposed; "OK" is below 2.1
HOW = "Debian package systemd"


def fake_root(tmp: Path, units: dict[str, Path] | None = None) -> Path:
    """A root with the system's own units, /opt/ecd/bin/ecd (ExecStart must exist) and ours in
    /etc/systemd/system, for ``systemd-analyze --root``."""
    root = tmp / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "opt/ecd/bin").mkdir(parents=True)
    ecd = root / "opt/ecd/bin/ecd"
    ecd.write_text("#!/bin/sh\n")
    ecd.chmod(0o755)
    dest = root / "etc/systemd/system"
    dest.mkdir(parents=True)
    for name in UNITS:
        shutil.copy((units or {}).get(name, SYSTEMD / name), dest / name)
    return root


def verify(root: Path, names: list[str]) -> None:
    exe = tool("systemd-analyze", HOW)
    if not Path("/usr/lib/systemd/system/sysinit.target").exists():
        pytest.skip("systemd's own units (/usr/lib/systemd/system) are not installed (Debian package systemd)")
    proc = run([exe, "verify", "--man=no", f"--root={root}", *(str(root / "etc/systemd/system" / n) for n in names)])
    # verify exits 0 on some problems and only prints them (an unknown key, a key in the wrong section)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_units_verify(tmp_path: Path) -> None:
    verify(fake_root(tmp_path), UNITS)


@pytest.mark.parametrize("old,new,says", [
    ("Restart=on-failure", "Restart=sometimes", "sometimes"),                      # a bad value
    ("RestartSec=5\n", "RestartSec=5\nAfter=cloud.service\n", "Unknown key 'After'"),  # a [Unit] key in [Service]
    ("ExecStart=/opt/ecd/bin/ecd", "ExecStart=/opt/ecd/bin/ecd-missing", "ecd-missing"),  # no such program
])
def test_verify_fails_on_a_broken_unit(tmp_path: Path, old: str, new: str, says: str) -> None:
    bad = broken_copy(SYSTEMD / "ecd-edge-node.service", tmp_path / "bad", old, new)
    with pytest.raises(AssertionError, match=says):
        verify(fake_root(tmp_path, {"ecd-edge-node.service": bad}), ["ecd-edge-node.service"])


def exposure(root: Path, unit: str, threshold: float) -> object:
    exe = tool("systemd-analyze", HOW)
    return run([exe, "security", "--offline=yes", f"--root={root}", f"--threshold={int(threshold * 10)}", unit])


def test_services_are_hardened(tmp_path: Path) -> None:
    """Every hardening option systemd offers that the services can live with: exposure below 2.0."""
    root = fake_root(tmp_path)
    for unit in SERVICES:
        proc = exposure(root, unit, MAX_EXPOSURE)
        ok(proc)
        assert f"Overall exposure level for {unit}" in proc.stdout
        text = (SYSTEMD / unit).read_text()
        for line in ("User=ecd", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n"):
            assert line in text, f"{unit}: {line.strip()} missing"


def test_security_fails_on_an_unhardened_unit(tmp_path: Path) -> None:
    text = (SYSTEMD / "ecd-edge-node.service").read_text()
    loose = tmp_path / "loose" / "ecd-edge-node.service"
    loose.parent.mkdir()
    loose.write_text(text.split("# Hardening")[0] + "\n[Install]\nWantedBy=multi-user.target\n")
    proc = exposure(fake_root(tmp_path, {"ecd-edge-node.service": loose}), "ecd-edge-node.service", MAX_EXPOSURE)
    fails(proc, "Overall exposure level")


def sysusers(conf: Path, tmp: Path) -> object:
    exe = tool("systemd-sysusers", HOW)
    root = tmp / "sysroot"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    return run([exe, f"--root={root}", "--dry-run", str(conf)])


def test_sysusers_creates_the_dedicated_user(tmp_path: Path) -> None:
    proc = sysusers(SYSTEMD / "ecd.sysusers", tmp_path)
    ok(proc)
    assert "ecd" in proc.stdout + proc.stderr


def test_sysusers_fails_on_a_broken_line(tmp_path: Path) -> None:
    bad = broken_copy(SYSTEMD / "ecd.sysusers", tmp_path, 'u ecd - "ECD', 'q ecd - "ECD')
    fails(sysusers(bad, tmp_path))


@pytest.mark.parametrize("toml,prefix", [("edge-node.toml", "ECD_EDGE_"), ("device-agent.toml", "ECD_AGENT_")])
def test_config_files_resolve_with_the_services_parser(toml: str, prefix: str, tmp_path: Path) -> None:
    from deploy_helpers import config_class

    cfg = resolve_config(config_class(prefix), prefix, toml=SYSTEMD / toml)
    assert cfg.model_dir.startswith("/var/lib/ecd/")  # the units' StateDirectory
    # a broken copy is refused, naming the key
    from ecd.errors import ConfigError

    bad = broken_copy(SYSTEMD / toml, tmp_path, "model_dir =", "model_folder =")
    with pytest.raises(ConfigError, match="model_folder"):
        resolve_config(config_class(prefix), prefix, toml=bad)


@pytest.mark.parametrize("env", ["edge-node.env", "device-agent.env"])
def test_env_files_name_real_options(env: str) -> None:
    """Each (commented) example line is an ECD_* variable the service reads, with a valid value."""
    lines = [line.lstrip("# ").strip() for line in (SYSTEMD / env).read_text().splitlines()]
    values = dict(line.split("=", 1) for line in lines if line.startswith("ECD_"))
    assert values
    check_env(values)
    with pytest.raises(AssertionError, match="no option"):
        check_env({next(iter(values)) + "X": "1"})


def test_units_point_at_the_files_they_need() -> None:
    for unit, toml, env in [("ecd-edge-node.service", "edge-node.toml", "edge-node.env"),
                            ("ecd-device-agent.service", "device-agent.toml", "device-agent.env")]:
        text = (SYSTEMD / unit).read_text()
        assert f"--config /etc/ecd/{toml}" in text and f"EnvironmentFile=-/etc/ecd/{env}" in text
        assert (SYSTEMD / toml).is_file() and (SYSTEMD / env).is_file()
    assert "Unit=ecd-device-agent.service" in (SYSTEMD / "ecd-device-agent.timer").read_text()
