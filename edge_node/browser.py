"""The device page (issue 33): a phone's browser as a device agent, served over HTTPS by the edge
node itself (``ecd edge --browser-port``, with the edge's own server certificate).

Why a WebSocket and not gRPC-web: a browser cannot open a client-streaming gRPC call (gRPC-web has
unary and server-streaming calls only, and its Python servers, e.g. sonora, are unmaintained), while
a device stream is client streaming. So each session is one WebSocket carrying the SAME protobuf
``ecd.v1.Frame`` (page -> edge) and ``ecd.v1.Result`` (edge -> page) messages a gRPC device stream
carries, one per binary WebSocket message, handed to the same per-frame path
(:meth:`edge_node.core.EdgeCore.serve_device`): token check, model version, split and privacy floor,
quotas, de-duplication of resent frames and forwarding are those of any device.

A session, before any frame is taken:

1. the edge sends ``{"challenge": base64}`` (32 random bytes);
2. the page answers ``{"device_id", "token", "public_key": base64 SPKI, "signature": base64}``, the
   challenge signed with its non-extractable WebCrypto ECDSA P-256 key;
3. the edge checks the signature (:mod:`ecd.devicekey`) and asks the cloud for the device's
   assignment with the key's holder name: a token shown with any other key is refused there;
4. the edge sends ``{"assignment": {...}}`` (with the defence noise scale the page adds at its
   split, :func:`defence_scale`) and from then on takes binary frames.

A refusal is ``{"error", "status"}`` and the socket closes with :data:`REFUSED` (the page shows it
and does not retry). In-flight frames of a page that closes are not answered; a page that comes
back resends the unanswered ones on its next session, and the edge answers each frame once.

The page also enrols (``POST /api/enrol``, relayed to the cloud's ``EnrolDevice``) and fetches its
partition's block files from here (``/api/models/...``): the edge's own copies, checked against the
manifest's sha256 when it fetched them from the cloud; the page checks them again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ecd import devicekey
from ecd.errors import AuthenticationError, ConfigError, EcdError, NotFoundError, RequestError
from ecd.leakage import defence_table, privacy_options
from ecd.manifest import MANIFEST_FILENAME, Manifest
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split
from ecd.transport import browser_wire
from ecd.types import Assignment, DeviceRegistration, Encoding, Enrolment, PreferencesUpdate
from ecd.web import HTTP_STATUS, check_same_origin, json_body
from edge_node.core import EdgeCore

log = logging.getLogger("ecd.edge.browser")

STATIC = Path(__file__).with_name("browser_static")
PAGE = STATIC / "index.html"
REFUSED = 4401  # WebSocket close code: the session was refused (bad key proof, unknown token); the page does not retry
NO_STORE = {"Cache-Control": "no-store"}
HELLO_TIMEOUT_S = 30.0  # the page signs the challenge at once; a socket that does not is dropped


def _b64(data: Any, name: str) -> bytes:
    if not isinstance(data, str):
        raise RequestError(f"{name}: expected a base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{name}: not base64") from None


def _text(data: dict, name: str, default: str | None = None, limit: int = 200) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or len(value) > limit:
        raise RequestError(f"{name}: expected a string of at most {limit} characters")
    return value


def _split(body: dict[str, Any]) -> int | None:
    """The split a page pins, or None (-1 or absent) for the one decided for its weights."""
    split = body.get("split", -1)
    if isinstance(split, bool) or not isinstance(split, int) or split < -1:
        raise RequestError(f"split: expected an integer >= 0, or -1 for the split decided for the weights; got {split!r}")
    return None if split < 0 else split


def defence_scale(manifest: Manifest, split: int) -> float:
    """The Laplace noise scale a device adds to its activation at ``split`` before it leaves, as the
    Python agent does with default preferences (``AgentCore._defend``): the decision's defence
    strength there (:func:`ecd.leakage.privacy_options`) times the manifest's measured scale; 0
    where the model has no defence table or the strength is 0."""
    strength = float(privacy_options(manifest).best_strength[split])
    table = defence_table(manifest) if strength > 0 else None
    return float(strength * table.scale[split]) if table is not None else 0.0


def assignment_json(a: Assignment, noise_scale: float = 0.0) -> dict[str, Any]:
    """What the page needs of its assignment (its token included: the page keeps it, next to a key
    that cannot leave the browser), and the defence noise it adds at its split."""
    return {"defence_scale": noise_scale, "device_id": a.device_id, "token": a.token, "model_id": a.model_id, "model_version": a.model_version,
            "split_device": a.split.device, "split_edge": a.split.edge, "recommended_split": a.recommended_split,
            "encoding": a.encoding.value if isinstance(a.encoding, Encoding) else "float32", "edge_id": a.edge_id,
            "preferences": {"w_energy": a.preferences.w_energy, "w_privacy": a.preferences.w_privacy,
                            "min_split": a.preferences.min_split}}


def enrolment_of(body: dict[str, Any]) -> Enrolment:
    """The page's enrolment request, every field checked and named."""
    min_split, split = body.get("min_split", 0), _split(body)
    encoding = Encoding.parse(_text(body, "encoding", "float16"))
    if encoding not in Encoding.for_activations():
        raise RequestError(f"encoding: expected float32, float16 or int8, got {encoding.value}")
    registration = DeviceRegistration(
        device_name=_text(body, "device_name", "phone", 64), profile="", radio=_text(body, "radio", "wifi", 16),
        preferences=Preferences(body.get("w_energy", 0.5), body.get("w_privacy", 0.5), min_split),
        model_id=_text(body, "model_id", "", 64), split_device=split, encoding=encoding)
    return Enrolment(_text(body, "code", limit=64), _b64(body.get("public_key"), "public_key"), registration)


class BrowserSessions:
    """The page's WebSocket sessions on this edge node (see the module's docstring)."""

    def __init__(self, core: EdgeCore):
        self.core = core

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            proven = await self._prove(ws)  # no frame is read before the key is proven
            if proven is not None:
                await self._stream(ws, *proven)
        except WebSocketDisconnect:
            pass

    async def _prove(self, ws: WebSocket) -> tuple[str, Assignment] | None:
        """The challenge and its answer: the key's holder name and the device's assignment, or None
        once refused."""
        nonce = devicekey.challenge()
        await ws.send_json({"challenge": base64.b64encode(nonce).decode()})
        try:
            try:  # a socket that never answers must not hold a connection of the page's few
                hello = await asyncio.wait_for(ws.receive_json(), HELLO_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise AuthenticationError(f"hello: the challenge was not answered within {HELLO_TIMEOUT_S:g} s") from None
            if not isinstance(hello, dict):
                raise RequestError("hello: expected a JSON object")
            spki = _b64(hello.get("public_key"), "public_key")
            devicekey.verify(spki, nonce, _b64(hello.get("signature"), "signature"))
            holder = devicekey.holder_of(spki)
            a = await self.core.cloud.get_assignment(_text(hello, "device_id"), _text(hello, "token"), holder)
            manifest, _ = await self.core.model(a.model_id, a.model_version)
        except (EcdError, ValueError) as e:  # ValueError: a text message that is not JSON
            status = e.status if isinstance(e, EcdError) else "INVALID_ARGUMENT"
            await ws.send_json({"error": str(e), "status": status})
            await ws.close(REFUSED)
            return None
        await ws.send_json({"assignment": assignment_json(a, defence_scale(manifest, a.split.device))})
        return holder, a

    async def _preferences(self, ws: WebSocket, a: Assignment, text: str) -> None:
        """The page's new weights (``{"preferences": {...}}``): the split decided for them as for
        its enrolment (a phone's profile, its radio; or the one it pins), told to the cloud
        (``UpdatePreferences``). The floor may be raised, never lowered, as on the agent's panel.
        The page sends it once its frames in flight are answered (one sent under a floor raised
        meanwhile would be refused), then ends this session and streams at the new split on the
        next (a session's split is bound by its first frame)."""
        try:
            body = json.loads(text).get("preferences")
            if not isinstance(body, dict):
                raise RequestError("preferences: expected a JSON object")
            prefs = Preferences(body.get("w_energy"), body.get("w_privacy"), body.get("min_split", a.preferences.min_split))
            if prefs.min_split < a.preferences.min_split:
                raise RequestError(f"min_split: the floor can be raised, never lowered (it is {a.preferences.min_split})")
            manifest, _ = await self.core.model(a.model_id, a.model_version)
            split = _split(body)
            if split is None:
                split = decide_split(manifest, load_device(devicekey.BROWSER_PROFILE), load_radio(_text(body, "radio", "wifi", 16)),
                                     prefs).recommended
            updated = await self.core.cloud.update_preferences(PreferencesUpdate(a.device_id, a.token, prefs, split))
        except (EcdError, ValueError, AttributeError) as e:  # AttributeError: JSON that is not an object
            await ws.send_json({"preferences_error": str(e)})
            return
        self.core.forget([a.device_id])
        await ws.send_json({"preferences_applied": assignment_json(updated, defence_scale(manifest, split))})

    async def _stream(self, ws: WebSocket, holder: str, a: Assignment) -> None:
        closing: list[RequestError] = []

        async def frames():
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("bytes") is None:
                    await self._preferences(ws, a, msg.get("text") or "")  # the only text a page sends mid-stream
                    continue
                try:
                    yield browser_wire.frame_from_bytes(msg["bytes"])
                except RequestError as e:
                    closing.append(e)
                    return

        results = self.core.serve_device(frames(), holder)
        try:
            async with contextlib.aclosing(results):
                async for result in results:
                    await ws.send_bytes(browser_wire.result_to_bytes(result))
            if closing:
                await ws.send_json({"error": str(closing[0]), "status": closing[0].status})
                await ws.close(REFUSED)
        except EcdError as e:  # the device's stream quota, or the node draining: the page comes back later
            with contextlib.suppress(Exception):
                await ws.send_json({"error": str(e), "status": e.status})
                await ws.close(1013)  # try again later
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the page went away: what it had in flight is not answered (it resends on its next session)


def check_extra() -> None:
    """The page's session needs ``wsproto`` (uvicorn's WebSocket protocol here) and ``cryptography``
    for the key proof (the ``browser`` extra): refused at start, not at the first phone."""
    import importlib.util

    if importlib.util.find_spec("cryptography") is None or importlib.util.find_spec("wsproto") is None:
        raise ConfigError("browser_port: the device page needs cryptography and wsproto: pip install 'ecd-runtime[browser]'")


def browser_app(core: EdgeCore) -> Starlette:
    """The device page's ASGI app over ``core`` (an enrolment is relayed by ``core.cloud``)."""
    sessions = BrowserSessions(core)

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers=NO_STORE)

    async def enrol_route(request: Request) -> Response:
        check_same_origin(request, "this device page")
        a = await core.cloud.enrol_device(enrolment_of(await json_body(request)))
        return JSONResponse({"assignment": assignment_json(a)}, headers=NO_STORE)

    async def model_file(request: Request) -> Response:
        model_id, version, name = (request.path_params[k] for k in ("model_id", "version", "file"))
        manifest, _ = await core.model(model_id, version)
        if name != MANIFEST_FILENAME and name not in {b.file for b in manifest.blocks}:
            raise NotFoundError(f"file: {name!r} is not a file of {model_id}@{version}")
        return FileResponse(core.model_dir / model_id / version / name, headers={"Cache-Control": "private, max-age=86400"})

    async def on_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, EcdError)
        status = HTTP_STATUS.get(e.status, 500)  # a cloud's refusal keeps its status: the page shows why
        return JSONResponse({"error": str(e), "status": e.status}, status_code=status)

    if not (STATIC / "ort" / "ort.wasm.min.js").is_file():
        log.warning("[EdgeNode.Browser] onnxruntime-web is not built into %s: run `make browser-assets` (needs npm)", STATIC / "ort")
    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/enrol", enrol_route, methods=["POST"]),
            Route("/api/models/{model_id}/{version}/{file}", model_file),
            WebSocketRoute("/ws", sessions.serve),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={EcdError: on_error},
    )

