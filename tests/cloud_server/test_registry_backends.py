"""The registry behaves the same on SQLite and on PostgreSQL, two cloud replicas on one PostgreSQL
database share their state, and a bad ``db`` is a one-line error naming ``db``."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from cli import ecd_process

from cloud_server.campaigns import NEUTRAL_REPUTATION
from cloud_server.registry import Registry, redact
from cloud_server.config import CloudConfig
from ecd.errors import ConfigError, UnavailableError
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from harness import cloud_replicas

REPO = Path(__file__).resolve().parents[2]

DEVICE = dict(
    name="d", profile="pi4", radio="wifi", w_energy=0.5, w_privacy=0.5, min_split=1, model_id="digits_cnn",
    model_version="v1", split_device=2, split_edge=5, encoding="FLOAT32",
)


# --- the registry's behaviours, on both backends ------------------------------------------------


def test_devices_add_get_update(registry: Registry) -> None:
    edge = registry.add_edge("10.0.0.1:50051", 5.0)
    d = registry.add_device(**DEVICE, edge_id=edge.edge_id)
    assert registry.device(d.device_id) == d and d.reputation == pytest.approx(NEUTRAL_REPUTATION) and len(d.token) == 32
    assert registry.device("nope") is None
    u = registry.update_device(d.device_id, w_energy=0.2, w_privacy=0.8, min_split=3, split_device=4, split_edge=6)
    assert (u.w_energy, u.w_privacy, u.split.device, u.split.edge, u.min_split) == (0.2, 0.8, 4, 6, 3)  # exact: 8-byte floats
    assert u.token == d.token and registry.device(d.device_id) == u
    assert registry.device_count() == 1


def test_edge_keeps_its_id_on_reregistering_and_heartbeats(registry: Registry) -> None:
    first = registry.add_edge("10.0.0.1:50051", 5.0)
    other = registry.add_edge("10.0.0.2:50051", 1.0)
    assert registry.heartbeat(first.edge_id, load=3.5, queue_depth=7)
    assert (registry.edge(first.edge_id).load, registry.edge(first.edge_id).queue_depth) == (3.5, 7)
    again = registry.add_edge("10.0.0.1:50051", 8.0)
    assert again.edge_id == first.edge_id and (again.capacity, again.load, again.queue_depth) == (8.0, 0.0, 0)
    assert again.last_seen_unix >= first.last_seen_unix
    assert [e.edge_id for e in registry.edges()] == sorted([first.edge_id, other.edge_id])
    assert not registry.heartbeat("nope", 1.0, 0)
    assert registry.edge("nope") is None


def test_devices_per_edge(registry: Registry) -> None:
    a, b = registry.add_edge("a:1", 1.0), registry.add_edge("b:1", 1.0)
    for edge in (a, a, b):
        registry.add_device(**DEVICE, edge_id=edge.edge_id)
    assert registry.devices_per_edge() == {a.edge_id: 2, b.edge_id: 1}


def test_heads_in_order_and_replaced(registry: Registry) -> None:
    registry.put_head("digits_cnn", "parity", {"name": "parity", "v": 1})
    registry.put_head("digits_cnn", "big", {"name": "big"})
    registry.put_head("other", "x", {"name": "x"})
    assert [h["name"] for h in registry.heads("digits_cnn")] == ["parity", "big"]
    registry.put_head("digits_cnn", "parity", {"name": "parity", "v": 2})  # replaced: now the newest
    assert registry.heads("digits_cnn") == [{"name": "big"}, {"name": "parity", "v": 2}]
    assert registry.heads("none") == []


def test_state_survives_reopening(db: str) -> None:
    r = Registry(db)
    edge = r.add_edge("a:1", 1.0)
    d = r.add_device(**DEVICE, edge_id=edge.edge_id)
    r.close()
    r = Registry(db)
    try:
        assert r.device(d.device_id) == d and r.add_edge("a:1", 2.0).edge_id == edge.edge_id
    finally:
        r.close()


# --- two registries on one database -------------------------------------------------------------


def test_two_registries_share_state_and_never_split_an_edge(db: str) -> None:
    a, b = Registry(db), Registry(db)
    try:
        with ThreadPoolExecutor(8) as pool:  # both replicas register the same edges at once
            ids = list(pool.map(lambda i: (a, b)[i % 2].add_edge(f"edge-{i % 3}:1", 1.0).edge_id, range(48)))
        assert all(ids[i] == ids[i % 3] for i in range(48)) and len(set(ids)) == 3
        assert sorted(e.endpoint for e in b.edges()) == ["edge-0:1", "edge-1:1", "edge-2:1"]
        d = a.add_device(**DEVICE, edge_id=ids[0])
        assert b.device(d.device_id) == d
        assert b.heartbeat(ids[0], 2.0, 3) and a.edge(ids[0]).load == 2.0
        a.put_head("digits_cnn", "parity", {"name": "parity"})
        assert b.heads("digits_cnn") == [{"name": "parity"}]
        assert b.devices_per_edge() == {ids[0]: 1}
    finally:
        a.close()
        b.close()


def test_two_cloud_replicas_on_one_postgresql(postgres_url: str) -> None:
    """A device registered through replica A's gRPC face is known, with its token, at replica B."""
    with cloud_replicas(replace(CloudConfig(), db=postgres_url, port=0, metrics_port=0)) as (_, clouds):
        channels = [grpc.insecure_channel(f"127.0.0.1:{c.port}") for c in clouds]
        try:
            a, b = (pb_grpc.CloudServerStub(ch) for ch in channels)
            edge_id = a.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:50999", capacity=4.0), timeout=10).edge_id
            assert b.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:50999", capacity=4.0), timeout=10).edge_id == edge_id
            b.Heartbeat(pb.EdgeHeartbeat(edge_id=edge_id, load=1.0, queue_depth=2), timeout=10)
            assignment = a.RegisterDevice(
                pb.RegisterDeviceRequest(
                    device_name="shared", profile="pi4", radio="wifi",
                    preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5, min_split=1),
                    model_id="digits_cnn", split_device=2, encoding=pb.FLOAT32,
                ),
                timeout=30,
            )
            seen = b.GetAssignment(pb.GetAssignmentRequest(device_id=assignment.device_id, token=assignment.token), timeout=10)
            assert (seen.device_id, seen.token, seen.split_device, seen.edge_endpoint) == (
                assignment.device_id, assignment.token, 2, "127.0.0.1:50999",
            )
            assert clouds[0].registry.edge(edge_id).queue_depth == 2  # B's heartbeat, seen at A
            with pytest.raises(grpc.RpcError) as e:
                b.GetAssignment(pb.GetAssignmentRequest(device_id=assignment.device_id, token="wrong"), timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            for ch in channels:
                ch.close()


# --- bad configuration --------------------------------------------------------------------------


def test_unreachable_postgresql_is_unavailable_naming_db() -> None:
    with pytest.raises(UnavailableError) as e:
        Registry("postgresql://ecd:s3cret@127.0.0.1:1/x")
    message = str(e.value)
    assert message.startswith("db: cannot connect to postgresql://ecd:***@127.0.0.1:1/x: ")
    assert "s3cret" not in message and "\n" not in message
    assert "port 1 failed" in message  # the driver's reason, on the same line


def test_missing_driver_is_a_config_error_naming_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(ConfigError, match=r"^db: .*psycopg.*ecd-runtime\[cloud\]"):
        Registry("postgresql://127.0.0.1:1/x")


def test_other_urls_and_unopenable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^db: expected a SQLite file or a postgresql:// URL, got 'mysql://u:\*\*\*@h/x'"):
        Registry("mysql://u:pw@h/x")
    with pytest.raises(ConfigError, match=r"^db: cannot open the SQLite file"):
        Registry(tmp_path / "no" / "such" / "dir" / "r.sqlite3")


def test_redact_hides_passwords() -> None:
    assert redact("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgresql:///db?host=/run&password=x&sslmode=disable") == "postgresql:///db?host=/run&password=***&sslmode=disable"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_cli_exits_unavailable_with_one_line_naming_db() -> None:
    # a process: one error line and the exit code (69: a supervisor retries), as systemd or a shell sees them
    done = ecd_process("cloud-server", "--insecure", "--db", "postgresql://127.0.0.1:1/x", "--port", "0", "--metrics-port", "-1")
    assert done.returncode == 69, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("ecd: error: db: cannot connect to postgresql://127.0.0.1:1/x: "), done.stderr
    assert done.stderr.count("ecd: error:") == 1 and "Traceback" not in done.stderr, done.stderr
