"""What the two web pages share — the device agent's control panel and the cloud's operator view:
starting an ASGI app under uvicorn on a port chosen before it serves (port 0 = any free port, known
at once), JSON errors that name the field, and the vendored Chart.js.

The pages never reach the internet: Chart.js (MIT, ``web_static/chart.js-LICENSE.md``) is the npm
registry's ``chart.js@4.6.1`` ``dist/chart.umd.min.js``, committed as built and served from here.
Nothing here is on a frame's path: the panel only reads figures the services keep anyway and calls
their public methods.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ecd.errors import EcdError, PeerError, PermissionDeniedError, RequestError

STATIC = Path(__file__).with_name("web_static")
CHARTJS_SHA256 = "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"  # chart.js@4.6.1 dist/chart.umd.min.js
MAX_BODY_BYTES = 4096  # every request body the pages send is a handful of numbers

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 409,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}


def static_mount() -> Mount:
    """``/static``: Chart.js, its licence and the pages' stylesheet."""
    return Mount("/static", StaticFiles(directory=STATIC), name="static")


def check_same_origin(request: Request, what: str) -> None:
    """A state-changing request must come from a page of ``what`` itself: a browser names the page's
    origin in ``Origin`` on every cross-origin POST (and fetch sends it on same-origin ones), so one
    that names another host was made by another site."""
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise PermissionDeniedError(f"origin: {origin[:100]!r} is not {what}")


def error_response(e: EcdError) -> JSONResponse:
    """A 4xx/5xx JSON body ``{"error": message, "field": name, "status": STATUS}``; the runtime's
    messages start with the field they are about (``w_privacy: expected ...``). A peer's refusal
    (:class:`~ecd.errors.PeerError`) is a 502 whatever its status."""
    message = str(e)
    head, sep, _ = message.partition(":")
    field = head if sep and head.replace("_", "").replace(".", "").replace("-", "").isalnum() else ""
    code = 502 if isinstance(e, PeerError) else HTTP_STATUS.get(e.status, 500)  # a service behind this page failed
    return JSONResponse({"error": message, "field": field, "status": e.status}, status_code=code)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, bounded in size; anything else is a RequestError naming ``body``."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(f"body: expected at most {MAX_BODY_BYTES} bytes, got {len(raw)}")
    try:
        data = json.loads(raw or b"{}")
    except ValueError as e:
        raise RequestError(f"body: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise RequestError(f"body: expected a JSON object, got {type(data).__name__}")
    return data


def bind(host: str, port: int, option_name: str = "panel_port") -> socket.socket:
    """A listening TCP socket (port 0: any free port); the caller reads the port before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise EcdError(f"{option_name}: cannot listen on {host}:{port} ({e.strerror})") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _server(app: Any, tls: tuple[str, str] | None = None, max_connections: int = 32, ws: str = "auto"):
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its signal handlers: the service it runs in owns SIGTERM (the cloud drains
        its streams on it; the agent answers what is in flight) and stops the pages itself."""

        def capture_signals(self):
            return contextlib.nullcontext()

    certfile, keyfile = tls or (None, None)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            limit_concurrency=max_connections, timeout_keep_alive=5, ssl_certfile=certfile, ssl_keyfile=keyfile,
                            ws=ws)
    return Server(config)


class WebServer:
    """An ASGI app served by uvicorn, in the caller's event loop (:meth:`serve`) or in a thread of
    its own (:meth:`start`, for the device agent, which has no event loop). ``tls``: (certificate,
    key) PEM files to serve HTTPS with (the edge node's device page); None = plain HTTP.
    ``max_connections``: connections (a page's WebSocket session is one) and requests at once;
    ``ws``: uvicorn's WebSocket protocol (``wsproto`` for the edge's device page)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, tls: tuple[str, str] | None = None,
                 option_name: str = "panel_port", max_connections: int = 32, ws: str = "auto"):
        self.sock = bind(host, port, option_name)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.scheme = "https" if tls else "http"
        self.server = _server(app, tls, max_connections, ws)
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def serve(self) -> asyncio.Task:
        """Serve in the running event loop (the cloud's)."""
        self._task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        return self._task

    def start(self) -> WebServer:
        """Serve in a daemon thread with its own event loop."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                        name="ecd-web", daemon=True)
        self._thread.start()
        return self

    async def aclose(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            _, pending = await asyncio.wait([self._task], timeout=5)
            if pending:  # a connection that never finished closing (a page's socket whose peer went quiet)
                self.server.force_exit = True
                await asyncio.wait([self._task], timeout=1)
        self.sock.close()

    def close(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()
