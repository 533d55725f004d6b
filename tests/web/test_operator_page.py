"""The cloud's operator view in a real headless Chromium, against a real cloud and two edge nodes
with devices placed around them: every registered device and edge node is shown, the map of
positions is drawn, a device registered later appears by itself (the page refreshes), a refused
action shows the error's message, and the page raises no JavaScript error.

``ECD_WRITE_SCREENSHOTS=1`` also saves the page to ``docs/operator_view.png`` (never otherwise:
tests do not write into the repository)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from harness import Tiers, start_tiers, stop_tiers
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from web.conftest import page_errors

from cloud_server.config import CloudConfig
from cloud_server.scheduler_service import SchedulerClient
from ecd.types import Position
from ecd.scheduler_types import CampaignSpec, Grid
from ecd.v1 import ecd_pb2 as pb
from edge_node.service import EdgeConfig, start_edge

REPO = Path(__file__).resolve().parents[2]
TOKEN = "0e4f7a3c9b2d48e1a6c5f0b9d8e7a6c5"
EDGES = [(40.7060, -74.0090), (40.7580, -73.9855)]  # two edge nodes in Manhattan
OFFSETS = [(0.004, 0.003), (-0.003, 0.004), (0.002, -0.004)]
GRID = Grid(Position(40.69, -74.02), Position(40.77, -73.97), rows=2, cols=1)  # a south and a north cell


@pytest.fixture
def city(tmp_path: Path):
    """Real tiers (the cloud serving the operator view) and a second edge node; three devices with
    positions around each edge, placed by the cloud, and one campaign."""
    token = tmp_path / "operator.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    t = start_tiers(tmp_path, CloudConfig(panel_port=0, panel_token_file=str(token), placement_activation_cost=1.0),
                    EdgeConfig(position="{},{}".format(*EDGES[0])))
    second = t.loop.run(start_edge(replace(EdgeConfig(), cloud=t.cloud_target, port=0, metrics_port=-1, heartbeat_s=0.5,
                                           model_dir=str(tmp_path / "edge2"), position="{},{}".format(*EDGES[1]))))
    try:
        devices = [register(t, f"{where}-{k}", (lat + dlat, lon + dlon), w_privacy=0.2 + 0.3 * k)
                   for where, (lat, lon) in zip(("south", "north"), EDGES) for k, (dlat, dlon) in enumerate(OFFSETS)]
        client = SchedulerClient(t.cloud_target)
        try:
            client.place("otacs_ls")
            client.create_campaign(CampaignSpec("noise map", GRID, slots=2, reporters=[1], method="tapp", theta=5.0))
        finally:
            client.close()
        yield t, [t.edge.edge_id, second.edge_id], devices
    finally:
        t.loop.run(second.stop(0, leave=False))
        stop_tiers(t)


def register(t: Tiers, name: str, position: tuple[float, float], w_privacy: float = 0.5) -> pb.Assignment:
    return t.cloud_stub.RegisterDevice(pb.RegisterDeviceRequest(
        device_name=name, profile="pi4", radio="wifi", model_id="digits_cnn", split_device=2, encoding=pb.FLOAT32,
        preferences=pb.Preferences(w_energy=round(1 - w_privacy, 2), w_privacy=w_privacy, min_split=1),
        position=pb.Position(lat=position[0], lon=position[1]),
    ), timeout=30)


def shown(driver, selector: str, what: str = "innerText") -> str | None:
    """An element's text (or another property), read in one script: the page rebuilds its tables
    every 2 s, so an element found in one call may be gone by the next."""
    return driver.execute_script(f"const e = document.querySelector(arguments[0]); return e ? e.{what} : null", selector)


def rows_shown(driver, attribute: str) -> set[str]:
    return set(driver.execute_script(
        f"return Array.from(document.querySelectorAll('tr[{attribute}]')).map(r => r.getAttribute('{attribute}'))"))


def test_the_operator_page_shows_every_device_and_edge_node_and_draws_the_map(browser, city) -> None:
    t, edge_ids, devices = city
    wait = WebDriverWait(browser, 15)
    browser.get(f"http://127.0.0.1:{t.cloud.panel_port}/")
    ids = {a.device_id for a in devices}
    wait.until(lambda d: rows_shown(d, "data-device-id") == ids)
    assert rows_shown(browser, "data-edge-id") == set(edge_ids)
    placed = {d.device_id: d.edge_id for d in t.cloud.registry.devices()}
    assert set(placed.values()) == set(edge_ids)  # placement uses both edges
    for a in devices:  # each row carries what the registry holds: the edge placement chose, split, lease
        text = shown(browser, f"#device-{a.device_id}")
        assert placed[a.device_id] in text and "2 / 5" in text and "live" in text
    for edge_id in edge_ids:
        row = shown(browser, f"#edge-{edge_id}")
        assert "alive" in row and "active" in row
    assert len(rows_shown(browser, "data-campaign-id")) == 1
    assert "noise map" in browser.find_element(By.ID, "campaigns").text
    assert browser.find_element(By.ID, "n-devices").text == "6 / 6"
    assert browser.find_element(By.ID, "n-edges").text == "2 / 2"
    assert "otacs_ls" in browser.find_element(By.ID, "placement").text
    link = shown(browser, "#metrics a", "href")
    assert link == f"http://127.0.0.1:{t.cloud.metrics_port}/metrics"

    # the map: one point per edge node and per device, and the canvas has been painted
    points = browser.execute_script(
        "const c = Chart.getChart('map'); return c.data.datasets.map(s => s.data.length).reduce((a, b) => a + b, 0)")
    assert points == len(edge_ids) + len(devices)
    painted = browser.execute_script("""
        const c = document.getElementById('map'), g = c.getContext('2d');
        const px = g.getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
        return n;""")
    assert painted > 5000
    assert page_errors(browser) == []

    if os.environ.get("ECD_WRITE_SCREENSHOTS") == "1":
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, height + 200)
        wait.until(lambda d: rows_shown(d, "data-device-id") == ids)
        browser.save_screenshot(str(REPO / "docs" / "operator_view.png"))

    # a device that joins later appears by itself (the page refreshes every 2 s)
    late = register(t, "latecomer", (EDGES[1][0] + 0.001, EDGES[1][1] - 0.001))
    wait.until(lambda d: late.device_id in rows_shown(d, "data-device-id"))

    # a refused action shows the error's message; the right token revokes the device
    victim = devices[0].device_id

    def click_revoke(token: str) -> None:
        field = browser.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        browser.execute_script(  # click from a timer: confirm() must not block this script
            "const id = arguments[0]; setTimeout(() => document.querySelector(`tr[data-device-id='${id}'] button.revoke`).click(), 0)",
            victim)
        wait.until(EC.alert_is_present())
        browser.switch_to.alert.accept()

    click_revoke("not-the-operator-token")
    wait.until(lambda d: d.find_element(By.ID, "error").text == "operator: wrong operator token")
    assert t.cloud.registry.device(victim).token != "revoked"
    click_revoke(TOKEN)
    wait.until(lambda d: shown(d, f"#device-{victim}", "className") == "revoked")
    assert browser.find_element(By.ID, "error").text == ""
    with pytest.raises(grpc.RpcError) as e:
        t.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=victim, token=devices[0].token), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Chromium logs the refused request itself (401) as a console error; nothing else may be there
    assert [m for m in page_errors(browser) if "status of 401" not in m] == []
