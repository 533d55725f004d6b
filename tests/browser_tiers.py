"""A cloud and an edge node over real mutual TLS with the edge's device page on (``browser_port``
0), a Python stand-in for the page (its own ECDSA P-256 key, the enrolment over HTTPS, a session
over the WebSocket with ``websocket-client``, speaking exactly what the page speaks), and a
real headless Chromium whose fake camera plays a video of known images (tests/web,
benchmarks/browser.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
import websocket

from cloud_server.config import CloudConfig
from cloud_server.service import RunningCloud, start_cloud
from ecd import certs
from ecd.transport import tls
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from edge_node.service import EdgeConfig, RunningEdge, start_edge

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
FRAMES_EACH = 1  # video frames each image is shown for: a new digit every 33 ms, so 100 frames see many


@dataclass
class BrowserTiers:
    loop: LoopThread
    cloud: RunningCloud
    edge: RunningEdge
    folder: Path

    @property
    def page_url(self) -> str:
        return f"https://127.0.0.1:{self.edge.browser.port}/"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.edge.browser.port}/ws"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.folder / "ca.pem"))
        ctx.check_hostname = False  # the edge's certificate names edge.ecd and 127.0.0.1; the CA is what counts
        return ctx

    def code(self, ttl_s: float | None = None) -> str:
        return self.cloud.core.enrolment.issue(ttl_s).code


def start_browser_tiers(tmp: Path, cloud_cfg: CloudConfig | None = None, edge_cfg: EdgeConfig | None = None) -> BrowserTiers:
    folder = tmp / "certs"
    certs.init(folder, certs.default_holders(edges=1, devices=1))
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(cloud_cfg or CloudConfig(), db=str(tmp / "cloud.sqlite3"), port=0, metrics_port=-1,
                                         tls_dir=str(folder))))
    wait_healthy(f"127.0.0.1:{cloud.port}", tls=tls.load(str(folder), "operator"), server_role="cloud")
    edge = loop.run(start_edge(replace(edge_cfg or EdgeConfig(), cloud=f"127.0.0.1:{cloud.port}", port=0, metrics_port=-1,
                                       model_dir=str(tmp / "edge-models"), heartbeat_s=0.5, tls_dir=str(folder),
                                       tls_name="edge-1", browser_port=0)))
    return BrowserTiers(loop, cloud, edge, folder)


def stop_browser_tiers(t: BrowserTiers) -> None:
    t.loop.run(t.edge.stop(0))
    t.loop.run(t.cloud.stop(0))
    t.loop.close()


class SocketClosed(ConnectionError):
    pass


class PageSocket:
    """A page's WebSocket, synchronous and single-threaded (``websocket-client``): text messages
    come back as str, binary ones as bytes, the edge's close as :class:`SocketClosed` with its code
    kept in ``close_code``. (The ``websockets`` sync client reads TLS in a thread of its own while
    the caller writes; that broke here now and then, "[SSL] internal error", or a handshake never
    answered.)"""

    def __init__(self, tiers: BrowserTiers):
        self.ws = websocket.create_connection(tiers.ws_url, sslopt={"context": tiers.ssl_context()}, timeout=30)
        self.close_code: int | None = None

    def send(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            self.ws.send_binary(data)
        else:
            self.ws.send(data)

    def recv(self, timeout: float = 30.0) -> bytes | str:
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                raise SocketClosed(f"closed by the edge ({self.close_code})")
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return data.decode()
            if opcode == websocket.ABNF.OPCODE_BINARY:
                return data

    def close(self) -> None:
        self.ws.close()


class PageDevice:
    """What the page does, in Python: a key of its own, enrolment, sessions."""

    def __init__(self, tiers: BrowserTiers, key: ec.EllipticCurvePrivateKey | None = None):
        self.tiers = tiers
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.assignment: dict = {}

    @property
    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def enrol_response(self, code: str, **fields) -> httpx.Response:
        body = {"code": code, "public_key": base64.b64encode(self.spki).decode(), "device_name": "phone-1",
                "model_id": "digits_cnn", "w_energy": 0.5, "w_privacy": 0.5, "min_split": 0, "encoding": "float16", **fields}
        with httpx.Client(verify=self.tiers.ssl_context(), timeout=60) as client:
            return client.post(self.tiers.page_url + "api/enrol", json=body)

    def enrol(self, code: str, **fields) -> dict:
        response = self.enrol_response(code, **fields)
        assert response.status_code == 200, response.text
        self.assignment = response.json()["assignment"]
        return self.assignment

    def sign(self, message: bytes) -> bytes:
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def open(self, signer: PageDevice | None = None, token: str | None = None) -> tuple[PageSocket, dict]:
        """A session: the challenge answered (signed by ``signer``'s key, this device's by default,
        and presenting ``signer``'s public key); returns the socket and the edge's reply."""
        signer = signer or self
        ws = PageSocket(self.tiers)
        challenge = base64.b64decode(json.loads(ws.recv(timeout=30))["challenge"])
        ws.send(json.dumps({"device_id": self.assignment["device_id"], "token": token or self.assignment["token"],
                            "public_key": base64.b64encode(signer.spki).decode(),
                            "signature": base64.b64encode(signer.sign(challenge)).decode()}))
        return ws, json.loads(ws.recv(timeout=60))

    def frame(self, tensor: pb.Tensor, frame_id: int) -> bytes:
        a = self.assignment
        return pb.Frame(device_id=a["device_id"], frame_id=frame_id, token=a["token"], model_id=a["model_id"],
                        model_version=a["model_version"], split_device=a["split_device"], tensor=tensor).SerializeToString()


def write_y4m(path: Path, images: np.ndarray, fps: int = 30) -> None:
    """A grey YUV 4:2:0 video (the Y plane is the image; U and V are neutral) that Chromium's fake
    camera plays in a loop, each image for FRAMES_EACH frames."""
    n, h, w = images.shape
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        chroma = np.full((h // 2) * (w // 2), 128, np.uint8).tobytes()
        for image in images:
            for _ in range(FRAMES_EACH):
                f.write(b"FRAME\n" + image.astype(np.uint8).tobytes() + chroma + chroma)


def spki_pin(cert_pem: Path) -> str:
    """Chromium's --ignore-certificate-errors-spki-list entry for a certificate: base64 sha256 of its SPKI."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def chromium(tmp: Path, tiers: BrowserTiers, video: Path | None, camera: bool = True, size: str = "600,900"):
    """Headless Chromium with a fake camera (playing ``video``, or Chromium's own pattern), the
    camera permission granted as a user would (or refused), and the edge's certificate accepted by
    its key (the test CA is not in the system store)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={size}",
                f"--user-data-dir={tmp / 'chromium-profile'}", "--no-first-run", "--disable-extensions",
                "--use-fake-device-for-media-stream", f"--ignore-certificate-errors-spki-list={spki_pin(tiers.folder / 'edge-1.pem')}"):
        options.add_argument(arg)
    if video is not None:
        options.add_argument(f"--use-file-for-fake-video-capture={video}")
    options.add_argument("--use-fake-ui-for-media-stream" if camera else "--deny-permission-prompts")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(driver, script: str, what: str, timeout_s: float = 180.0):
    """Poll the page until ``script`` returns something truthy (the page's own state, not a guessed sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    shown = driver.execute_script("return document.getElementById('state').textContent")
    raise AssertionError(f"timed out waiting for {what}; the page says: {shown}")
