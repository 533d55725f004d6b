"""The control panel's JSON API over real HTTP, on a running agent: what it shows, what it changes,
and every bad request refused with a 4xx naming the field while the agent keeps streaming."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ecd.web import CHARTJS_SHA256
from harness import StreamingAgent, Tiers, recommended


@pytest.fixture
def panel(tiers: Tiers, tmp_path: Path):
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0, panel=True)
    client = httpx.Client(base_url=s.panel.url, timeout=30)
    try:
        s.wait_for(lambda a: a.tally.frames >= 5)
        client.headers["X-ECD-Session"] = client.get("/api/state").json()["session"]  # as the page does
        yield s, client
    finally:
        client.close()
        outcomes = s.stop()
        assert [o.frame_id for o in outcomes] == list(range(1, s.agent.status().sent + 1))


def test_state_shows_the_curve_the_choice_and_live_figures(panel) -> None:
    s, client = panel
    state = client.get("/api/state").json()
    assert state["device_id"] == s.agent.assignment.device_id and state["streaming"] is True
    assert (state["split"], state["recommended"], state["w_privacy"], state["min_split"]) == (0, 0, 0.0, 0)
    rows = state["curve"]
    assert [r["split"] for r in rows] == list(range(7))
    decision = s.agent.core.decision
    for r in rows:
        assert r["energy_j"] == pytest.approx(decision.e_comp[r["split"]] + decision.e_comm[r["split"]])
        assert r["p_priv"] == pytest.approx(decision.p_priv[r["split"]])
    assert min((r for r in rows if r["utility"] is not None), key=lambda r: r["utility"])["split"] == state["recommended"]
    live = state["live"]
    assert live["answered"] >= 5 and live["errors"] == 0 and live["per_split"].keys() == {"0"}
    assert live["bytes_per_frame"] > 0 and live["latency_p50_ms"] > 0
    assert live["energy_per_frame_j"] == pytest.approx(rows[0]["energy_j"])


def test_preview_changes_nothing(panel) -> None:
    s, client = panel
    p = client.get("/api/preview", params={"w_privacy": 1.0}).json()
    assert p["recommended"] == recommended(1.0) > 0 and p["w_privacy"] == 1.0
    assert s.agent.core.prefs.w_privacy == 0.0 and s.agent.assignment.split.device == 0


def test_post_resplits_and_tells_the_cloud(panel, tiers: Tiers) -> None:
    s, client = panel
    r = client.post("/api/preferences", json={"device_id": s.agent.assignment.device_id, "w_privacy": 1.0})
    assert r.status_code == 200, r.text
    high = recommended(1.0)
    s.wait_for(lambda a: a.tally.snapshot()["per_split"].get(high, 0) >= 5)
    assert tiers.cloud.registry.device(s.agent.assignment.device_id).split_device == high
    assert client.get("/api/state").json()["live"]["resplits"] == 1


@pytest.mark.parametrize("body,status,field", [
    ({"w_privacy": 2}, 400, "w_privacy"),
    ({"w_privacy": "0.5"}, 400, "w_privacy"),
    ({"w_privacy": None, "min_split": 99}, 400, "min_split"),
    ({"min_split": 1.5}, 400, "min_split"),
    ({"device_id": "dev-unknown", "w_privacy": 0.5}, 409, "device_id"),
    ({"split": 3}, 400, "split"),
])
def test_bad_bodies_are_refused_naming_the_field(panel, body, status, field) -> None:
    s, client = panel
    before = s.agent.tally.frames
    r = client.post("/api/preferences", json=body)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text
    assert s.agent.core.prefs.w_privacy == 0.0 and s.agent.assignment.split.device == 0
    s.wait_for(lambda a: a.tally.frames >= before + 5)  # still streaming


def test_nan_and_lowering_the_floor_mid_stream(panel) -> None:
    s, client = panel
    r = client.post("/api/preferences", content=b'{"w_privacy": NaN}', headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["field"]) == (400, "w_privacy")
    assert client.post("/api/preferences", json={"min_split": 2}).status_code == 200
    r = client.post("/api/preferences", json={"min_split": 1})
    assert (r.status_code, r.json()["field"]) == (409, "min_split")
    assert "only be raised" in r.json()["error"]
    assert client.get("/api/preview", params={"w_privacy": "x"}).json()["field"] == "w_privacy"


def test_cross_site_requests_are_refused(panel) -> None:
    """A page elsewhere can make the user's browser post to loopback: no JSON body, no change."""
    s, client = panel
    r = client.post("/api/preferences", content=b"w_privacy=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.json()["field"]) == (400, "content-type")
    r = client.post("/api/preferences", json={"w_privacy": 1.0}, headers={"origin": "http://evil.example"})
    assert (r.status_code, r.json()["field"]) == (403, "origin")
    # a request from elsewhere cannot read /api/state, so it cannot know the page's session token
    for forged in ("", "guessed"):
        r = client.post("/api/preferences", json={"w_privacy": 1.0}, headers={"X-ECD-Session": forged})
        assert (r.status_code, r.json()["field"]) == (403, "x-ecd-session"), r.text
    assert s.agent.core.prefs.w_privacy == 0.0
        # DNS rebinding: a foreign name resolving to 127.0.0.1 still names itself in Host
    assert client.get("/api/state", headers={"host": "evil.example"}).status_code == 400
    assert client.post("/api/preferences", content=b"x" * 5000, headers={"content-type": "application/json"}).json()["field"] == "body"
    assert s.agent.core.prefs.w_privacy == 0.0


def test_page_and_vendored_chart_are_served_without_a_cdn(panel) -> None:
    import hashlib

    _, client = panel
    page = client.get("/").text
    assert 'src="static/chart.umd.min.js"' in page and "http://" not in page and "https://" not in page
    chart = client.get("/static/chart.umd.min.js")
    assert chart.status_code == 200 and hashlib.sha256(chart.content).hexdigest() == CHARTJS_SHA256
    assert client.get("/static/chart.js-LICENSE.md").text.startswith("The MIT License")
