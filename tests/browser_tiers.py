"""A cloud and an edge node over real mutual TLS with the edge's device page on (``browser_port``
0), and a Python stand-in for the page: its own ECDSA P-256 key, the enrolment over HTTPS, and a
session over the WebSocket (the ``websockets`` client), speaking exactly what the page speaks."""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from websockets.sync.client import ClientConnection, connect

from cloud_server.config import CloudConfig
from cloud_server.service import RunningCloud, start_cloud
from ecd import certs
from ecd.transport import tls
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from edge_node.service import EdgeConfig, RunningEdge, start_edge


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

    def open(self, signer: PageDevice | None = None, token: str | None = None) -> tuple[ClientConnection, dict]:
        """A session: the challenge answered (signed by ``signer``'s key, this device's by default,
        and presenting ``signer``'s public key); returns the socket and the edge's reply."""
        signer = signer or self
        # entered as websockets >= 17 wants (a `with` block); the tests close the socket themselves
        ws = connect(self.tiers.ws_url, ssl=self.tiers.ssl_context(), open_timeout=30, max_size=None).__enter__()
        challenge = base64.b64decode(json.loads(ws.recv(timeout=30))["challenge"])
        ws.send(json.dumps({"device_id": self.assignment["device_id"], "token": token or self.assignment["token"],
                            "public_key": base64.b64encode(signer.spki).decode(),
                            "signature": base64.b64encode(signer.sign(challenge)).decode()}))
        return ws, json.loads(ws.recv(timeout=60))

    def frame(self, tensor: pb.Tensor, frame_id: int) -> bytes:
        a = self.assignment
        return pb.Frame(device_id=a["device_id"], frame_id=frame_id, token=a["token"], model_id=a["model_id"],
                        model_version=a["model_version"], split_device=a["split_device"], tensor=tensor).SerializeToString()
