"""Key custody in deploy/ (issue 30): no manifest gives any tier the CA's key or another holder's key.
Each tier gets ca.pem and its own NAME.pem/NAME.key only, presents an identity of its own role, and
no edge or device identity is shared: Kubernetes has one Secret per holder (cloud, each edge node,
each device) and one workload per edge or device identity, Compose one set of secrets per service,
systemd the unit's own credentials (custody.py reads them). Each check is shown to fail on a
broken copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from custody import compose_tiers, k8s_tiers, problems, secret_problems, systemd_tier
from deploy_helpers import DEPLOY, broken_copy
from k8s_checks import broken_objects, objects

SYSTEMD = DEPLOY / "systemd"
UNITS = {"ecd-edge-node.service": "edge-node.toml", "ecd-device-agent.service": "device-agent.toml"}


def compose(path: Path = DEPLOY / "compose.yaml") -> list:
    return compose_tiers(yaml.safe_load(path.read_text()), DEPLOY)


def systemd(units: dict[str, Path] | None = None) -> list:
    return [systemd_tier((units or {}).get(u, SYSTEMD / u), SYSTEMD / toml) for u, toml in UNITS.items()]


def test_every_tier_gets_only_its_own_key() -> None:
    k8s, dc, units = k8s_tiers(objects()), compose(), systemd()
    assert problems(k8s) + secret_problems(objects()) + problems(dc) + problems(units) == []
    want = {("cloud", "cloud"), ("edge", "edge-1"), ("edge", "edge-2"), ("device", "device-1"), ("device", "device-2")}
    assert {(t.role, t.tls_name) for t in k8s} == want and {(t.role, t.tls_name) for t in dc} == want
    assert {(t.role, t.tls_name) for t in units} == {("edge", "edge-1"), ("device", "device-1")}
    for t in k8s + dc + units:
        assert set(t.files) == {"ca.pem", f"{t.tls_name}.pem", f"{t.tls_name}.key"}, (t.where, t.files)


@pytest.mark.parametrize("edits,says", [
    ({"edge.yaml": [("secretName: ecd-tls-edge-1", "secretName: ecd-tls-edge-2")]}, "gets edge-2.key"),
    ({"secrets.yaml": [("  cloud.key: |", "  ca.key: |\n    x\n  cloud.key: |")]}, "gets ca.key"),
    ({"secrets.yaml": [("  cloud.key: |", "  edge-1.key: |\n    x\n  cloud.key: |")]}, "Secret ecd-tls-cloud holds cloud.key, edge-1.key"),
    ({"device-agents.yaml": [("value: device-1\n", "value: edge-1\n"), ("secretName: ecd-tls-device-1", "secretName: ecd-tls-edge-1")]},
     "the device tier presents edge-1"),
    ({"device-agents.yaml": [("value: device-2\n", "value: device-1\n"), ("secretName: ecd-tls-device-2", "secretName: ecd-tls-device-1")]},
     "2 tiers present device-1"),
    ({"edge.yaml": [("  replicas: 1 #", "  replicas: 2 #")]}, "2 pods share edge-1's key"),
    ({"cloud.yaml": [("secretName: ecd-tls-cloud", "secretName: ecd-postgres")]}, "lacks ca.pem, cloud.key, cloud.pem"),
])
def test_k8s_custody_check_fails_on_broken_copies(tmp_path: Path, edits: dict, says: str) -> None:
    objs = broken_objects(tmp_path, edits)
    found = problems(k8s_tiers(objs)) + secret_problems(objs)
    assert any(says in f for f in found), (edits, found)


@pytest.mark.parametrize("old,new,says", [
    ("      - source: edge-1-key\n", "      - source: edge-2-key\n", "gets edge-2.key"),
    ("  edge-1-key:\n    file: ./tls/edge-1.key", "  edge-1-key:\n    file: ./tls/ca.key", "gets ca.key"),
    ("      - cloud-data:/var/lib/ecd\n", "      - cloud-data:/var/lib/ecd\n      - ./tls:/etc/ecd/tls:ro\n", "mounts the folder ./tls"),
    ("      ECD_AGENT_TLS_NAME: device-2\n", "      ECD_AGENT_TLS_NAME: device-1\n", "2 tiers present device-1"),
])
def test_compose_custody_check_fails_on_broken_copies(tmp_path: Path, old: str, new: str, says: str) -> None:
    found = problems(compose(broken_copy(DEPLOY / "compose.yaml", tmp_path, old, new)))
    assert any(says in f for f in found), found


@pytest.mark.parametrize("old,new,says", [
    ("LoadCredential=edge-1.key:/etc/ecd/tls/edge-1.key", "LoadCredential=edge-1.key:/etc/ecd/tls/ca.key", "gets ca.key"),
    ("ECD_EDGE_TLS_DIR=%d", "ECD_EDGE_TLS_DIR=/etc/ecd/tls", "every file in it"),
    ("ECD_EDGE_TLS_NAME=edge-1", "ECD_EDGE_TLS_NAME=device-1", "the edge tier presents device-1"),
])
def test_systemd_custody_check_fails_on_broken_copies(tmp_path: Path, old: str, new: str, says: str) -> None:
    bad = broken_copy(SYSTEMD / "ecd-edge-node.service", tmp_path, old, new)
    found = problems(systemd({"ecd-edge-node.service": bad}))
    assert any(says in f for f in found), found
