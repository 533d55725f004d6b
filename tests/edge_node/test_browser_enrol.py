"""The device page's server side (issue 33), driven as the page drives it — HTTPS enrolment and a
WebSocket session — over a real cloud and edge node with mutual TLS between them: a code enrols
once and only in time, the session's key proof is what lets a token in, and frames take the same
path (and get the same answers) as a gRPC device's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from browser_tiers import BrowserTiers, PageDevice, PageSocket, SocketClosed, start_browser_tiers, stop_browser_tiers
from ecd import codec, zoo
from ecd.clock import SYSTEM_CLOCK
from ecd.leakage import defence_table
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split
from ecd.partition import Partition
from ecd.transport import serde
from ecd.types import Encoding
from ecd.v1 import ecd_pb2 as pb
from edge_node.browser import REFUSED


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory):
    t = start_browser_tiers(tmp_path_factory.mktemp("browser"))
    yield t
    stop_browser_tiers(t)


@pytest.fixture(scope="module")
def digits():
    manifest = zoo.load_manifest("digits_cnn")
    images = np.load(zoo.model_dir("digits_cnn") / "heldout.npz")["images"]
    return manifest, images


def expected_output(manifest, image: np.ndarray, split: int, encoding: Encoding) -> np.ndarray:
    """The Python agent's answer for this image at this split: its blocks, its encoding, the rest."""
    x = manifest.input.preprocess(image[None])
    sent = codec.encode(Partition(manifest, 0, split).run(x), encoding)
    y = codec.decode(sent, manifest.activation_shape(split), 1 << 30)
    return Partition(manifest, split, manifest.n_blocks).run(y)[0]


def tensor_at(manifest, image: np.ndarray, split: int, encoding: Encoding) -> pb.Tensor:
    x = manifest.input.preprocess(image[None])
    return serde.tensor_to_pb(codec.encode(Partition(manifest, 0, split).run(x), encoding))


class Clock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


def test_a_code_enrols_a_device_whose_frames_get_the_python_agents_answers(tiers: BrowserTiers, digits) -> None:
    manifest, images = digits
    page = PageDevice(tiers)
    a = page.enrol(tiers.code(), w_privacy=0.9, w_energy=0.1, min_split=2)
    assert a["split_device"] >= 2 and a["encoding"] == "float16"  # the cloud decided, over the floor
    record = tiers.cloud.registry.device(a["device_id"])
    assert record.holder.startswith("browser:") and record.name == "phone-1"
    ws, hello = page.open()
    assert hello["assignment"]["device_id"] == a["device_id"]
    split = a["split_device"]
    for i in range(6):
        ws.send(page.frame(tensor_at(manifest, images[i], split, Encoding.FLOAT16), i + 1))
    results = {}
    for _ in range(6):
        r = pb.Result.FromString(ws.recv(timeout=60))
        assert not r.HasField("error"), r.error.message
        results[r.frame_id] = r
    ws.close()
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    for i in range(6):
        np.testing.assert_allclose(results[i + 1].output, expected_output(manifest, images[i], split, Encoding.FLOAT16), atol=1e-4)
        assert results[i + 1].split_device == split


def test_a_frame_under_the_privacy_floor_is_refused_as_for_any_device(tiers: BrowserTiers, digits) -> None:
    manifest, images = digits
    page = PageDevice(tiers)
    a = page.enrol(tiers.code(), min_split=3)
    ws, _ = page.open()
    low = pb.Frame.FromString(page.frame(tensor_at(manifest, images[0], 1, Encoding.FLOAT16), 1))
    low.split_device = 1
    ws.send(low.SerializeToString())
    r = pb.Result.FromString(ws.recv(timeout=60))
    ws.close()
    assert r.error.message.startswith("split_device"), r.error.message
    assert a["split_device"] >= 3


def test_a_used_code_does_not_enrol_again(tiers: BrowserTiers) -> None:
    code = tiers.code()
    PageDevice(tiers).enrol(code)
    again = PageDevice(tiers).enrol_response(code)
    assert again.status_code == 401
    assert again.json()["error"] == "cloud: code: this enrolment code was already used; ask the operator for a new one"


def test_an_unknown_code_does_not_enrol(tiers: BrowserTiers) -> None:
    response = PageDevice(tiers).enrol_response("NOPE234567")
    assert response.status_code == 401
    assert response.json()["error"] == "cloud: code: unknown enrolment code 'NOPE234567'; ask the operator for one"


def test_an_expired_code_does_not_enrol(tiers: BrowserTiers) -> None:
    codes = tiers.cloud.core.enrolment
    clock = Clock(1_000_000.0)
    codes.clock = clock
    try:
        code = codes.issue(60).code
        clock.now += 60  # the code's last moment is gone
        response = PageDevice(tiers).enrol_response(code)
        assert response.status_code == 401
        assert response.json()["error"] == "cloud: code: this enrolment code has expired; ask the operator for a new one"
        fresh = codes.issue(60).code
        clock.now += 59.9
        assert PageDevice(tiers).enrol(fresh)["device_id"]  # within its minute it does
    finally:
        codes.clock = SYSTEM_CLOCK


def test_a_bad_request_does_not_use_the_code_up(tiers: BrowserTiers) -> None:
    code = tiers.code()
    bad_key = PageDevice(tiers).enrol_response(code, public_key="AAAA")
    assert bad_key.status_code == 400 and bad_key.json()["error"].startswith("cloud: public_key: "), bad_key.text
    bad_weights = PageDevice(tiers).enrol_response(code, w_privacy=-1)
    assert bad_weights.status_code == 400 and bad_weights.json()["error"].startswith("w_privacy: ")
    assert PageDevice(tiers).enrol(code)["device_id"]


def test_a_session_whose_signature_fails_takes_no_frame(tiers: BrowserTiers) -> None:
    page = PageDevice(tiers)
    page.enrol(tiers.code())
    thief = PageDevice(tiers)

    class Forger(PageDevice):  # presents the device's public key, but cannot sign with its private key
        spki = page.spki

        def sign(self, message: bytes) -> bytes:
            return thief.sign(message)

    ws, reply = page.open(signer=Forger(tiers, thief.key))
    assert reply == {"error": "signature: the session's challenge was not signed by this device's key", "status": "UNAUTHENTICATED"}
    with pytest.raises(SocketClosed):
        ws.recv(timeout=30)
    ws.close()
    assert ws.close_code == REFUSED


def test_a_copied_token_without_the_key_is_refused(tiers: BrowserTiers) -> None:
    page = PageDevice(tiers)
    page.enrol(tiers.code())
    thief = PageDevice(tiers)  # signs correctly, with a key of its own
    thief.assignment = page.assignment
    ws, reply = thief.open()
    assert reply["status"] == "UNAUTHENTICATED"
    assert reply["error"].endswith("token was issued to another device certificate")
    ws.close()
    ok, hello = page.open()  # the device itself still gets in
    assert "assignment" in hello
    ok.close()


def test_a_revoked_device_is_refused_at_its_next_session(tiers: BrowserTiers) -> None:
    page = PageDevice(tiers)
    a = page.enrol(tiers.code())
    tiers.cloud.core.devices.revoke(a["device_id"])
    tiers.edge.core.forget([a["device_id"]])  # what the next heartbeat does
    ws, reply = page.open()
    assert reply["status"] == "UNAUTHENTICATED", reply
    ws.close()
    again = page.enrol_response(tiers.code())  # the same key cannot come back with a new code
    assert again.status_code == 403 and "was revoked" in again.json()["error"]


def test_frames_of_a_closed_session_are_answered_once_when_resent(tiers: BrowserTiers, digits) -> None:
    """A page that goes away with frames in flight resends them on its next session: each is
    answered once there (handed over, or run again), none lost."""
    manifest, images = digits
    page = PageDevice(tiers)
    a = page.enrol(tiers.code())
    frames = [page.frame(tensor_at(manifest, images[i], a["split_device"], Encoding.FLOAT16), i + 1) for i in range(8)]
    ws, _ = page.open()
    for f in frames:
        ws.send(f)
    ws.close()  # nothing read
    ws, _ = page.open()
    for f in frames:
        ws.send(f)
    seen = [pb.Result.FromString(ws.recv(timeout=60)) for _ in frames]
    ws.close()
    assert sorted(r.frame_id for r in seen) == list(range(1, 9))
    assert all(not r.HasField("error") for r in seen), [r.error.message for r in seen]


def test_bytes_that_are_not_a_frame_end_the_session(tiers: BrowserTiers) -> None:
    page = PageDevice(tiers)
    page.enrol(tiers.code())
    ws, _ = page.open()
    ws.send(b"\xff\xff\xff")
    reply = ws.recv(timeout=30)
    assert '"frame: 3 bytes that are not a serialized ecd.v1.Frame"' in reply
    with pytest.raises(SocketClosed):
        ws.recv(timeout=30)
    ws.close()
    assert ws.close_code == REFUSED


def test_the_page_and_its_partition_files_are_served(tiers: BrowserTiers, tmp_path: Path) -> None:
    page = PageDevice(tiers)
    a = page.enrol(tiers.code())
    manifest = zoo.load_manifest("digits_cnn")
    with httpx.Client(verify=tiers.ssl_context(), timeout=60) as client:
        assert client.get(tiers.page_url).status_code == 200
        base = f"{tiers.page_url}api/models/digits_cnn/{a['model_version']}/"
        block = client.get(base + manifest.blocks[0].file)
        assert block.status_code == 200
        assert hashlib.sha256(block.content).hexdigest() == manifest.blocks[0].sha256
        assert client.get(base + "cloud.sqlite3").status_code == 404


def test_a_page_may_pin_its_split_but_never_under_its_floor(tiers: BrowserTiers) -> None:
    assert PageDevice(tiers).enrol(tiers.code(), split=3, min_split=2)["split_device"] == 3
    code = tiers.code()
    low = PageDevice(tiers).enrol_response(code, split=1, min_split=2)
    assert low.status_code == 409 and low.json()["error"] == "cloud: split_device: 1 is below the device's floor (min_split 2)"
    bad = PageDevice(tiers).enrol_response(code, split="3")
    assert bad.status_code == 400 and bad.json()["error"].startswith("split: ")
    assert PageDevice(tiers).enrol(code)["split_device"] >= 0  # the code was not used up by the refusals


def test_the_session_tells_the_page_the_python_agents_defence_noise_at_its_split(tiers: BrowserTiers) -> None:
    manifest = zoo.load_manifest("digits_cnn")
    decision = decide_split(manifest, load_device("phone_midrange"), load_radio("wifi"), Preferences(0.5, 0.5))
    table = defence_table(manifest, required=True)
    for split in (2, 3):
        page = PageDevice(tiers)
        page.enrol(tiers.code(), split=split)
        ws, hello = page.open()
        ws.close()
        want = decision.strength_at(split) * float(table.scale[split])
        assert hello["assignment"]["defence_scale"] == pytest.approx(want)
        assert (want > 0) == (split == 3)  # digits_cnn: none at 2, the agent's noise at 3


def test_new_weights_on_a_session_resplit_the_device_and_the_floor_only_rises(tiers: BrowserTiers) -> None:
    page = PageDevice(tiers)
    a = page.enrol(tiers.code(), split=2, min_split=1)
    ws, _ = page.open()
    ws.send(json.dumps({"preferences": {"w_energy": 0.5, "w_privacy": 0.5, "min_split": 0}}))
    assert json.loads(ws.recv(timeout=30)) == {"preferences_error": "min_split: the floor can be raised, never lowered (it is 1)"}
    ws.send(json.dumps({"preferences": {"w_energy": 0.2, "w_privacy": 0.8, "min_split": 4, "radio": "lte"}}))
    applied = json.loads(ws.recv(timeout=60))["preferences_applied"]
    ws.close()
    manifest = zoo.load_manifest("digits_cnn")
    want = decide_split(manifest, load_device("phone_midrange"), load_radio("lte"), Preferences(0.2, 0.8, 4)).recommended
    assert applied["split_device"] == want and applied["preferences"]["min_split"] == 4 and want != a["split_device"]
    ws, hello = page.open()  # the next session streams at the new split
    ws.close()
    assert hello["assignment"]["split_device"] == want
    record = tiers.cloud.registry.device(a["device_id"])
    assert (record.split_device, record.min_split) == (want, 4)


def test_the_page_is_never_served_in_plaintext() -> None:
    import asyncio

    from ecd.errors import ConfigError
    from edge_node.service import EdgeConfig, start_edge

    with pytest.raises(ConfigError, match="^browser_port: the device page is served over HTTPS"):
        asyncio.run(start_edge(EdgeConfig(browser_port=0, insecure=True)))


def test_a_socket_that_never_answers_the_challenge_is_dropped(tiers: BrowserTiers, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_node import browser

    monkeypatch.setattr(browser, "HELLO_TIMEOUT_S", 0.05)
    ws = PageSocket(tiers)
    assert "challenge" in json.loads(ws.recv(timeout=30))
    reply = json.loads(ws.recv(timeout=30))  # nothing sent: the edge gives up on its own
    assert reply == {"error": "hello: the challenge was not answered within 0.05 s", "status": "UNAUTHENTICATED"}
    with pytest.raises(SocketClosed):
        ws.recv(timeout=30)
    ws.close()
    assert ws.close_code == REFUSED
