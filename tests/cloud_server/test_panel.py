"""The cloud's operator view over a real cloud and edge node: its JSON API lists every registered
device and edge node with their fields, names the field of a bad request, reads only for operator
peers, and acts (revoking a device) only with the operator token — after which the cloud refuses
the device as the Scheduler's RevokeDevice would have."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import pytest
from harness import Tiers, start_tiers, stop_tiers

from cloud_server.panel import Limits, OperatorView
from cloud_server.registry import Registry
from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from cloud_server.scheduler_service import SchedulerClient
from ecd.errors import ConfigError
from ecd.transport.rpc import LoopThread
from ecd.types import Position
from ecd.scheduler_types import CampaignSpec, Grid
from ecd.v1 import ecd_pb2 as pb

TOKEN = "f3a9c2e1b7d84c6a9e0f1d2c3b4a5968"
GRID = Grid(Position(40.70, -74.02), Position(40.72, -73.98), rows=1, cols=2)
WEST, EAST = (40.71, -74.01), (40.71, -73.99)


def token_file(tmp: Path, text: str = TOKEN) -> str:
    path = tmp / "operator.token"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def panel(tmp_path: Path):
    """Real tiers whose cloud serves the operator view, actions unlocked by ``TOKEN``."""
    t = start_tiers(tmp_path, CloudConfig(panel_port=0, panel_token_file=token_file(tmp_path)))
    with httpx.Client(base_url=f"http://127.0.0.1:{t.cloud.panel_port}", timeout=10) as http:
        yield t, http
    stop_tiers(t)


def register(t: Tiers, name: str, split: int, min_split: int = 0, w_privacy: float = 0.5,
             position: tuple[float, float] | None = None) -> pb.Assignment:
    return t.cloud_stub.RegisterDevice(pb.RegisterDeviceRequest(
        device_name=name, profile="pi4", radio="wifi", model_id="digits_cnn", split_device=split, encoding=pb.FLOAT32,
        preferences=pb.Preferences(w_energy=1 - w_privacy, w_privacy=w_privacy, min_split=min_split),
        position=pb.Position(lat=position[0], lon=position[1]) if position else None,
    ), timeout=30)


def test_the_overview_lists_every_registered_device_and_edge_node_with_their_fields(panel) -> None:
    t, http = panel
    a = register(t, "kitchen", split=1, w_privacy=0.2)
    b = register(t, "porch", split=3, min_split=2, w_privacy=0.9, position=WEST)
    c = register(t, "garage", split=2)
    t.cloud_stub.ReportLocation(pb.LocationReport(device_id=c.device_id, token=c.token,
                                                  position=pb.Position(lat=EAST[0], lon=EAST[1])), timeout=10)
    r = http.get("/api/overview")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    o = r.json()
    devices = {d["device_id"]: d for d in o["devices"]}
    assert set(devices) == {a.device_id, b.device_id, c.device_id} and o["devices_total"] == 3 == o["devices_live"]
    record = {d.device_id: d for d in t.cloud.registry.devices()}
    for want in (a, b, c):
        got, rec = devices[want.device_id], record[want.device_id]
        assert (got["split_device"], got["split_edge"]) == (want.split_device, want.split_edge)
        assert (got["w_energy"], got["w_privacy"], got["min_split"]) == (rec.w_energy, rec.w_privacy, rec.min_split)
        assert got["edge_id"] == want.edge_id == rec.edge_id != ""
        assert got["reputation"] == rec.reputation and got["lease"] == "live" and got["last_seen_unix"] > 0
        assert "token" not in got
    assert devices[a.device_id]["name"] == "kitchen" and devices[a.device_id]["position"] is None
    assert devices[b.device_id]["position"] == {"lat": WEST[0], "lon": WEST[1]} and devices[b.device_id]["min_split"] == 2
    assert devices[c.device_id]["position"] == {"lat": EAST[0], "lon": EAST[1]}  # ReportLocation moved it
    (edge,) = o["edges"]
    assert edge["edge_id"] == t.edge.edge_id and edge["endpoint"] == t.edge.endpoint and o["edges_total"] == 1
    assert edge["alive"] is True and edge["devices"] == 3 and edge["capacity"] > 0
    assert {"load", "queue_depth", "position", "active", "last_seen_unix"} <= set(edge)
    assert o["placement"]["version"] >= 1 and o["placement"]["method"]
    assert o["metrics"] == [{"name": "cloud", "url": f"http://127.0.0.1:{t.cloud.metrics_port}/metrics"}]
    assert httpx.get(o["metrics"][0]["url"], timeout=10).status_code == 200
    assert o["actions"] == {"revoke": True} and o["campaigns"] == [] and o["campaigns_total"] == 0
    # one device alone: the same record, and its pending tasks
    one = http.get(f"/api/devices/{b.device_id}").json()
    assert {k: v for k, v in one.items() if k != "pending_tasks"} == devices[b.device_id] and one["pending_tasks"] == 0


def test_the_page_and_its_script_come_from_the_cloud_itself(panel) -> None:
    _, http = panel
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/chart.umd.min.js">' in page.text and "https://" not in page.text  # no CDN
    assert http.get("/static/chart.umd.min.js").status_code == 200


def test_campaigns_and_their_outcomes_are_listed(panel) -> None:
    t, http = panel
    for k, where in enumerate([WEST, WEST, EAST, EAST]):
        register(t, f"s{k}", split=2, position=where)
    client = SchedulerClient(t.cloud_target)
    try:
        report = client.create_campaign(CampaignSpec("heat", GRID, slots=2, reporters=[1], method="tapp", theta=5.0))
    finally:
        client.close()
    (c,) = http.get("/api/overview").json()["campaigns"]
    assert c["campaign_id"] == report.campaign_id and c["name"] == "heat" and c["method"] == "tapp"
    assert c["status"] == "running" and c["results"] == 0
    assert (c["requested_work"], c["allocated_work"], c["chosen"], c["participants"], c["dangerous"]) == (
        report.requested_work, report.allocated_work, report.chosen, report.participants, report.dangerous)
    assert c["quality"]["devices"] == 0 and c["quality"]["mean_quality"] is None  # scored once every task is answered


@pytest.mark.parametrize("method,path", [("GET", "/api/devices/nosuchdevice"), ("POST", "/api/devices/nosuchdevice/revoke")])
def test_an_unknown_device_is_a_404_naming_device_id(panel, method: str, path: str) -> None:
    _, http = panel
    r = http.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404
    assert r.json() == {"error": "device_id: no device 'nosuchdevice' is registered" if method == "GET"
                        else "device_id: 'nosuchdevice' is not registered", "field": "device_id", "status": "NOT_FOUND"}


def test_revoking_needs_the_operator_token_and_then_the_cloud_refuses_the_device(panel) -> None:
    t, http = panel
    a = register(t, "stolen", split=2)
    path = f"/api/devices/{a.device_id}/revoke"
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}):
        r = http.post(path, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["field"] == "operator" and r.json()["status"] == "UNAUTHENTICATED"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert http.get(path).status_code == 405  # an action is never a GET (no link or image can trigger it)
    r = http.post(path, headers={"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"})
    assert (r.status_code, r.json()["field"]) == (403, "origin")  # another site's page, even holding the token
    t.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=10)  # still in
    r = http.post(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["revoked"] is True and r.json()["device"]["lease"] == "revoked"
    with pytest.raises(grpc.RpcError) as e:
        t.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = {d["device_id"]: d for d in http.get("/api/overview").json()["devices"]}
    assert listed[a.device_id]["lease"] == "revoked" and listed[a.device_id]["revoked_unix"] > 0


def test_without_a_token_file_the_view_is_read_only(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, CloudConfig(panel_port=0))
    try:
        a = t.register(2)
        with httpx.Client(base_url=f"http://127.0.0.1:{t.cloud.panel_port}", timeout=10) as http:
            assert http.get("/api/overview").json()["actions"] == {"revoke": False}
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):
                r = http.post(f"/api/devices/{a.device_id}/revoke", headers=headers)
                assert r.status_code == 403 and r.json()["field"] == "operator" and "read-only" in r.json()["error"]
        t.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=10)  # not revoked
    finally:
        stop_tiers(t)


def test_only_operator_peers_may_read_and_only_under_an_address_or_localhost(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, CloudConfig(panel_port=0, operator_peers=("192.0.2.7",), panel_token_file=token_file(tmp_path)))
    try:
        a = t.register(2)
        base = f"http://127.0.0.1:{t.cloud.panel_port}"
        for method, path in (("GET", "/"), ("GET", "/api/overview"), ("GET", f"/api/devices/{a.device_id}"),
                             ("POST", f"/api/devices/{a.device_id}/revoke")):
            r = httpx.request(method, base + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            assert r.status_code == 403, path
            assert r.json() == {"error": "operator: calls from 127.0.0.1 are not taken here (operator_peers)",
                                "field": "operator", "status": "PERMISSION_DENIED"}
        assert httpx.get(base + "/static/panel.css", timeout=10).status_code == 200  # the public files are public
    finally:
        stop_tiers(t)
    (tmp_path / "2").mkdir()
    t = start_tiers(tmp_path / "2", CloudConfig(panel_port=0))
    try:
        base = f"http://127.0.0.1:{t.cloud.panel_port}"
        for host in ("attacker.example", f"attacker.example:{t.cloud.panel_port}", "127.0.0.1.nip.io"):
            r = httpx.get(base + "/api/overview", headers={"Host": host}, timeout=10)  # a rebound DNS name
            assert r.status_code == 403 and r.json()["field"] == "host", host
        for host in (f"127.0.0.1:{t.cloud.panel_port}", f"localhost:{t.cloud.panel_port}", "[::1]:80", "127.0.0.1"):
            assert httpx.get(base + "/api/overview", headers={"Host": host}, timeout=10).status_code == 200, host
    finally:
        stop_tiers(t)


def test_what_is_listed_is_bounded_with_the_totals_alongside(panel) -> None:
    t, _ = panel
    ids = [register(t, f"d{k}", split=2).device_id for k in range(3)]
    o = OperatorView(t.cloud.core, limits=Limits(devices=2, edges=0, campaigns=0)).overview()
    assert [d["device_id"] for d in o["devices"]] == ids[:2] and o["devices_total"] == 3  # oldest registered first
    assert o["edges"] == [] and o["edges_total"] == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_views_registry_reads_on_both_backends(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    registry = Registry(str(tmp_path / "r.sqlite3") if backend == "sqlite" else request.getfixturevalue("postgres_url"))
    try:
        fields = {"profile": "pi4", "radio": "wifi", "w_energy": 0.5, "w_privacy": 0.5, "min_split": 1, "model_id": "digits_cnn",
                  "model_version": "v1", "split_device": 2, "split_edge": 5, "encoding": "float32", "edge_id": "e"}
        added = [registry.add_device(name=f"d{k}", **fields) for k in range(3)]
        registry.revoke_device(added[1].device_id)
        rows = registry.device_activity(2)
        assert [r[0].device_id for r in rows] == [d.device_id for d in added[:2]]  # oldest first, bounded
        assert all(r[1] > 0 and r[2] >= r[1] for r in rows) and rows[0][3] == 0 and rows[1][3] > 0
        (one,) = registry.device_activity(5, added[2].device_id)
        assert one[0] == added[2] and registry.device_activity(5, "nope") == [] and registry.device_activity(0) == []
        for k in range(3):
            registry.put_campaign(f"c{k}", {"campaign_id": f"c{k}"})
            time.sleep(0.01)
        assert [c["campaign_id"] for c in registry.campaigns(2)] == ["c2", "c1"] and registry.campaign_count() == 3
    finally:
        registry.close()


@pytest.mark.parametrize("change,field", [
    ({"panel_token_file": "/nonexistent/operator.token"}, "panel_token_file"),
    ({"panel_token_file": "SHORT"}, "panel_token_file"),
    ({"panel_host": "192.0.2.7"}, "panel_host"),
])
def test_bad_panel_options_fail_before_anything_starts(tmp_path: Path, change: dict, field: str) -> None:
    if change.get("panel_token_file") == "SHORT":
        change = {"panel_token_file": token_file(tmp_path, "too-short")}
    loop = LoopThread()
    try:
        with pytest.raises(ConfigError, match=f"^{field}: "):
            loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), metrics_port=-1, panel_port=0, **change)))
    finally:
        loop.close()
    assert not (tmp_path / "c.sqlite3").exists()  # the registry was never opened


def test_the_view_is_off_by_default(tiers) -> None:
    assert tiers.cloud.panel_port == -1 and tiers.cloud.panel is None


def test_ecd_cloud_server_prints_the_views_port_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ecd_cli.main", "cloud-server", "--insecure", "--db", str(tmp_path / "c.sqlite3"),
                             "--port", "0", "--metrics-port", "-1", "--panel-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] == "cloud-server" and ready["panel_port"] > 0
        assert httpx.get(f"http://127.0.0.1:{ready['panel_port']}/api/overview", timeout=10).json()["devices_total"] == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # the cloud's own drain ran: the view does not take the signal for itself
        assert "SIGTERM: stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
