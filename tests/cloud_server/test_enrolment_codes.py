"""Enrolment codes for browser devices (issue 33): the operator view issues them (operator token,
same origin), each with the device page's address as a QR code; each is good once and only in time."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cloud_server.config import CloudConfig
from cloud_server.enrolment import ALPHABET, CODE_CHARS, EnrolmentCodes
from ecd.errors import AuthenticationError, RequestError
from harness import start_tiers, stop_tiers

TOKEN = "0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f"
PAGE = "https://edge-1.example:8443/"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def time(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def panel(tmp_path: Path):
    token = tmp_path / "operator.token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    t = start_tiers(tmp_path, CloudConfig(panel_port=0, panel_token_file=str(token), enrol_page_url=PAGE, enrol_code_ttl_s=120))
    with httpx.Client(base_url=f"http://127.0.0.1:{t.cloud.panel_port}", timeout=10) as http:
        yield t, http
    stop_tiers(t)


def test_the_operator_view_issues_a_code_with_the_pages_address_as_a_qr_code(panel) -> None:
    t, http = panel
    assert http.post("/api/enrolment-codes").status_code == 401
    assert http.post("/api/enrolment-codes", headers={"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}).status_code == 403
    r = http.post("/api/enrolment-codes", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert len(c["code"]) == CODE_CHARS and set(c["code"]) <= set(ALPHABET)
    assert c["url"] == f"{PAGE}?code={c['code']}"
    assert c["qr_svg"].startswith("data:image/svg+xml")
    assert c["expires_unix_ms"] - t.cloud.core.enrolment.clock.time() * 1000 == pytest.approx(120_000, abs=5_000)
    t.cloud.core.enrolment.redeem(c["code"])  # the cloud knows it, once
    with pytest.raises(AuthenticationError, match="already used"):
        t.cloud.core.enrolment.redeem(c["code"])
    assert "issue enrolment code" in http.get("/").text


def test_a_code_is_good_once_and_until_it_expires() -> None:
    clock = Clock()
    codes = EnrolmentCodes(ttl_s=60, clock=clock)
    a, b = codes.issue(), codes.issue()
    assert a.code != b.code and a.expires == clock.now + 60
    clock.now += 59.999
    codes.redeem(a.code.lower())  # typed on a phone: case does not matter
    with pytest.raises(AuthenticationError, match="^code: this enrolment code was already used"):
        codes.redeem(a.code)
    clock.now += 0.001
    with pytest.raises(AuthenticationError, match="^code: this enrolment code has expired"):
        codes.redeem(b.code)
    with pytest.raises(AuthenticationError, match="^code: unknown enrolment code"):
        codes.redeem("ABCDEFGHJK")
    codes.issue()  # issuing drops the expired ones
    assert b.code not in codes._codes
    for bad in (0, -1, 24 * 3600 + 1):
        with pytest.raises(RequestError, match="^ttl_s: "):
            codes.issue(bad)


def test_an_edge_relays_new_weights_only_for_a_device_assigned_to_it(tmp_path: Path) -> None:
    from cloud_server.core import CloudCore
    from cloud_server.registry import Registry
    from ecd import zoo
    from ecd.errors import PermissionDeniedError
    from ecd.split import Preferences
    from ecd.types import DeviceRegistration, EdgeRegistration, Encoding, PreferencesUpdate

    core = CloudCore(Registry(str(tmp_path / "c.sqlite3")), [zoo.load_manifest("digits_cnn")])
    core.edges.register(EdgeRegistration("127.0.0.1:1", 10.0), owner="edge-1")
    a = core.devices.register(DeviceRegistration("d", "phone_midrange", "wifi", Preferences(0.5, 0.5, 0), "digits_cnn", 2, Encoding.FLOAT16))
    update = PreferencesUpdate(a.device_id, a.token, Preferences(0.2, 0.8, 3), 3)
    with pytest.raises(PermissionDeniedError, match="not assigned to this edge node"):
        core.devices.update_preferences(update, None, edge_owner="edge-2")
    assert core.devices.update_preferences(update, None, edge_owner="edge-1").split.device == 3
