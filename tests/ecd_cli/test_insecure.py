"""Secure by default: ``ecd cloud-server|edge-node|device-agent`` without ``--tls-dir`` refuse to start
(exit 78, one line naming ``ecd certs init`` and ``--insecure``); ``--insecure`` (or ``insecure = true``
in the config file, or the former ``--allow-plaintext``) allows plaintext, and logs one WARNING
where plaintext then listens beyond loopback."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
from cli import ecd, ecd_process

from cloud_server.config import CloudConfig
from device_agent.config import AgentConfig
from ecd.config import resolve
from ecd_cli.serve import check_transport
from edge_node.service import EdgeConfig


@pytest.mark.parametrize("service", ["cloud-server", "edge-node", "device-agent"])
def test_a_tier_without_certificates_refuses_to_start_naming_both_ways_out(service: str, tmp_path: Path) -> None:
    done = ecd(service, "--metrics-port", "-1")
    assert done.returncode == 78 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"ecd: error: {service}: no --tls-dir")
    assert "`ecd certs init DIR`" in done.stderr and "--insecure" in done.stderr


def test_the_refusal_is_exit_78_for_a_supervisor_too() -> None:
    # a process: systemd's RestartPreventExitStatus=64 78 sees this code and does not restart a missing key
    done = ecd_process("edge-node", "--cloud", "127.0.0.1:1", "--metrics-port", "-1")
    assert done.returncode == 78 and done.stderr.strip().splitlines()[-1].startswith("ecd: error: edge-node: no --tls-dir")


def options(cls: type, prefix: str, tmp_path: Path, toml: str = "", **flags) -> object:
    path = tmp_path / "options.toml"
    path.write_text(toml)
    return resolve(cls, argparse.Namespace(config=str(path), **flags), prefix)


def test_insecure_comes_from_a_flag_the_config_file_or_the_former_name(tmp_path: Path, monkeypatch) -> None:
    assert options(CloudConfig, "ECD_CLOUD_", tmp_path, "insecure = true\n").insecure is True
    assert options(EdgeConfig, "ECD_EDGE_", tmp_path, "allow_plaintext = true\n").insecure is True
    assert options(AgentConfig, "ECD_AGENT_", tmp_path, insecure=True).insecure is True
    monkeypatch.setenv("ECD_AGENT_INSECURE", "1")
    assert options(AgentConfig, "ECD_AGENT_", tmp_path).insecure is True
    assert ecd("edge-node", "--allow-plaintext", "--help").returncode == 0  # the former flag still parses


def warnings(caplog: pytest.LogCaptureFixture, cfg: object, service: str = "cloud-server") -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecd"):
        check_transport(cfg, service)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_insecure_warns_once_where_plaintext_listens_beyond_loopback(caplog: pytest.LogCaptureFixture) -> None:
    assert warnings(caplog, CloudConfig(insecure=True)) == []  # loopback: the demo, the tests
    assert warnings(caplog, CloudConfig(tls_dir="/etc/ecd/tls", host="0.0.0.0")) == []  # TLS beyond loopback
    assert warnings(caplog, CloudConfig(tls_dir="d", panel_port=0, panel_host="10.0.0.2")) == []  # refused later, not waved
    assert warnings(caplog, CloudConfig(insecure=True, host="0.0.0.0", panel_port=0, panel_host="10.0.0.2")) == [
        ("[cloud-server] --insecure: plaintext listening on 0.0.0.0, 10.0.0.2, beyond loopback: anyone on that network "
         "can read and forge this traffic")]
    # with TLS the gRPC port is not plaintext, but the panel (plain HTTP) still is
    [line] = warnings(caplog, CloudConfig(insecure=True, tls_dir="d", host="0.0.0.0", panel_port=0, panel_host="10.0.0.2"))
    assert "on 10.0.0.2, beyond" in line
    assert len(warnings(caplog, EdgeConfig(insecure=True, host="0.0.0.0"), "edge-node")) == 1
    assert warnings(caplog, AgentConfig(insecure=True, panel_port=0, panel_host="0.0.0.0"), "device-agent")[0].startswith("[device-agent]")
    assert warnings(caplog, AgentConfig(insecure=True, panel_host="0.0.0.0"), "device-agent") == []  # panel off
