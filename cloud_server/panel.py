"""The cloud's operator view: one page and a small JSON API over what the cloud already keeps —
devices, edge nodes, the current placement, campaigns and their outcomes — and one action, revoking
a device, the same as the Scheduler's ``RevokeDevice``.

Who may do what (the same rules as the operator's gRPC calls, since the page shows every device's
position):

* **reading** (the page, ``/api/...``) only from ``operator_peers`` (``check_peer``), and only under
  a Host header that is an IP address, ``localhost`` or a name listed in ``hosts``: a web site a
  browser on the operator's machine visits cannot rebind its own name to the loopback view
  (DNS rebinding) and read it;
* **acting** (``POST``) only with ``Authorization: Bearer <token>``, the token read from the
  cloud's ``panel_token_file`` and compared in constant time; a cloud given no token file serves a
  read-only view (every action 403, naming ``operator``), a missing or wrong token is 401. A
  browser never sends that header by itself, so no other site can make the operator's browser act.

Transport-free apart from HTTP: plain Python over :class:`~cloud_server.core.CloudCore` and its
registry. Registry calls block (SQLite or PostgreSQL), so every request runs them in a worker
thread, never on the event loop that also serves the cloud's gRPC calls. Everything listed is
bounded (``Limits``), with the totals alongside.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_server import campaigns
from cloud_server.core import CloudCore
from cloud_server.registry import REVOKED, DeviceRecord, EdgeRecord
from ecd.errors import AuthenticationError, ConfigError, EcdError, NotFoundError, PermissionDeniedError
from ecd.limits import printable
from ecd.web import check_same_origin, error_response, static_mount

log = logging.getLogger("ecd.cloud")

PAGE = Path(__file__).with_name("operator.html")
MIN_TOKEN_CHARS = 16  # the token is the only thing between a loopback peer and revoking devices


@dataclass(frozen=True)
class Limits:
    """The most rows one answer lists (totals are always given): the page refreshes every 2 s."""

    devices: int = 500
    edges: int = 200
    campaigns: int = 20


def read_token(path: str) -> str:
    """The operator token in ``path`` (surrounding whitespace dropped); "" for no path, i.e. a
    read-only view. A file readable by others is used, with a warning."""
    if not path:
        return ""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"panel_token_file: cannot read {path} ({getattr(e, 'strerror', None) or e})") from None
    if len(text) < MIN_TOKEN_CHARS or any(c.isspace() for c in text):
        raise ConfigError(f"panel_token_file: {path} must hold one token of at least {MIN_TOKEN_CHARS} characters "
                          "and no spaces (e.g. `openssl rand -hex 16 > FILE`)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("[CloudServer.Panel] panel_token_file %s is readable by others (chmod 600 it)", path)
    return text


def _position(lat: float | None, lon: float | None) -> dict[str, float] | None:
    return {"lat": lat, "lon": lon} if lat is not None and lon is not None else None


class OperatorView:
    """What the page shows, as JSON-ready dicts. Every method blocks on the registry: call it from
    a worker thread."""

    def __init__(self, core: CloudCore, metrics_port: int = -1, limits: Limits = Limits(), enrol_page_url: str = ""):
        self.core = core
        self.metrics_port = metrics_port
        self.limits = limits
        self.enrol_page_url = enrol_page_url  # the edge nodes' device page, put in an enrolment code's QR code

    # --- one record each -------------------------------------------------------------------------

    def _device(self, d: DeviceRecord, registered: float, seen: float, revoked: float, live_since: float) -> dict[str, Any]:
        """A device as the operator sees it; never its token (the registry holds only a hash anyway)."""
        revoked_now = d.token == REVOKED
        try:
            sensors = json.loads(d.sensors)
        except ValueError:
            sensors = {}
        return {
            "device_id": d.device_id, "name": d.name, "model_id": d.model_id, "model_version": d.model_version,
            "profile": d.profile, "radio": d.radio, "split_device": d.split_device, "split_edge": d.split_edge,
            "encoding": d.encoding, "w_energy": d.w_energy, "w_privacy": d.w_privacy, "min_split": d.min_split,
            "edge_id": d.edge_id, "reputation": d.reputation, "position": _position(d.lat, d.lon), "sensors": sensors,
            "registered_unix": registered, "last_seen_unix": seen, "revoked_unix": revoked if revoked_now else 0.0,
            # a lease is renewed by any authenticated call, written at most every device_lease_s / 4
            "lease": "revoked" if revoked_now else "live" if seen >= live_since else "expired",
        }

    def _edge(self, e: EdgeRecord, now: float, served: dict[str, int], active: set[str]) -> dict[str, Any]:
        return {
            "edge_id": e.edge_id, "endpoint": e.endpoint, "alive": self.core.edges.is_alive(e, now),
            "load": e.load, "queue_depth": e.queue_depth, "capacity": e.capacity, "devices": served.get(e.edge_id, 0),
            "active": e.edge_id in active, "position": _position(e.lat, e.lon), "last_seen_unix": self.core.edges.last_heard(e),
            "activation_cost": e.activation_cost or self.core.assignment.activation_cost,
        }

    def _placement(self) -> dict[str, Any] | None:
        p = self.core.placement.current  # one read: a placement running in another thread replaces it whole
        if p is None:
            return None
        return {
            "version": p.version, "method": p.method, "trigger": p.trigger, "total_cost": p.total_cost,
            "activation_cost": p.activation_cost, "service_cost": p.service_cost, "seconds": p.seconds,
            "computed_unix_ms": p.computed_unix_ms, "active_edges": [e.edge_id for e in p.edges if e.active],
            "devices_placed": sum(1 for d in p.devices if d.edge_id), "devices": len(p.devices),
        }

    def _campaign(self, c: dict[str, Any]) -> dict[str, Any]:
        """A stored campaign report's figures; tasks answered so far are counted while it runs."""
        spec = c.get("spec", {})
        quality = c.get("quality", [])
        floor = spec.get("reputation_floor", -1.0)
        floor = floor if floor >= 0 else campaigns.DEFAULT_REPUTATION_FLOOR
        results = c.get("results", 0)
        if c.get("status") == "running":
            results = c.get("allocated_work", 0) - self.core.registry.unanswered(c["campaign_id"])
        return {
            "campaign_id": c["campaign_id"], "name": spec.get("name", ""), "method": spec.get("method", ""),
            "status": c.get("status", ""), "slots": spec.get("slots", 0),
            "requested_work": c.get("requested_work", 0), "allocated_work": c.get("allocated_work", 0), "results": results,
            "participants": c.get("participants", 0), "chosen": c.get("chosen", 0), "dangerous": c.get("dangerous", 0),
            "excluded": len(c.get("excluded", [])), "utility": c.get("utility", 0.0), "coverage": c.get("coverage", 0),
            "cells": c.get("cells", 0), "objective": c.get("objective", 0.0), "latency_s": c.get("latency_s", 0.0),
            "seconds": c.get("seconds", 0.0), "reputation_floor": floor,
            "quality": {  # CrowdPower's scoring, once every task is answered
                "devices": len(quality), "reports": sum(q["reports"] for q in quality),
                "outliers": sum(q["outliers"] for q in quality),
                "mean_quality": sum(q["quality"] for q in quality) / len(quality) if quality else None,
                "below_floor": sum(1 for q in quality if q["reputation"] < floor),
            },
        }

    # --- the API's answers -----------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        registry, now = self.core.registry, self.core.clock.time()
        live_since = self.core.leases.live_since()
        devices = [self._device(*row, live_since) for row in registry.device_activity(self.limits.devices)]
        placement = self._placement()
        active = set(placement["active_edges"]) if placement else set()
        served = registry.devices_per_edge(live_since)
        edges = registry.edges()
        stored = registry.campaigns(self.limits.campaigns)
        return {
            "now_unix": now,
            "cloud": {"models": sorted(self.core.models), "placement_method": self.core.placement.method,
                      "edge_timeout_s": self.core.edges.timeout_s, "device_lease_s": self.core.leases.lease_s,
                      "reputation_floor": campaigns.DEFAULT_REPUTATION_FLOOR},
            "devices": devices, "devices_total": registry.device_count(),
            "devices_live": sum(served.values()),
            "edges": [self._edge(e, now, served, active) for e in edges[: self.limits.edges]], "edges_total": len(edges),
            "placement": placement,
            "campaigns": [self._campaign(c) for c in stored], "campaigns_total": registry.campaign_count(),
            "limits": {"devices": self.limits.devices, "edges": self.limits.edges, "campaigns": self.limits.campaigns},
        }

    def device(self, device_id: str) -> dict[str, Any]:
        rows = self.core.registry.device_activity(1, device_id)
        if not rows:
            raise NotFoundError(f"device_id: no device {printable(device_id)!r} is registered")
        out = self._device(*rows[0], self.core.leases.live_since())
        out["pending_tasks"] = len(self.core.registry.pending_tasks(device_id))
        return out

    def revoke(self, device_id: str) -> dict[str, Any]:
        """The Scheduler's RevokeDevice: the cloud refuses the device's token at once, its edge node
        from its next heartbeat on."""
        self.core.devices.revoke(device_id)
        log.warning("[CloudServer.Panel] %s revoked from the operator view", printable(device_id))
        return self.device(device_id)

    def enrolment_code(self) -> dict[str, Any]:
        """A one-time code that enrols one browser device (cloud_server.enrolment), and the device
        page's address carrying it, as a QR code to scan (SVG, when segno is installed)."""
        issued = self.core.enrolment.issue()
        url = f"{self.enrol_page_url}{'&' if '?' in self.enrol_page_url else '?'}code={issued.code}" if self.enrol_page_url else ""
        qr = ""
        if url:
            try:
                import segno
            except ImportError:
                log.warning("[CloudServer.Panel] no QR code for the enrolment code: pip install 'ecd-runtime[cloud]' (segno)")
            else:
                qr = segno.make(url, error="m").svg_data_uri(scale=4)
        log.info("[CloudServer.Panel] enrolment code issued, good until %s", issued.expires)
        return {"code": issued.code, "expires_unix_ms": int(issued.expires * 1000), "url": url, "qr_svg": qr}

    def metrics(self, host: str) -> list[dict[str, str]]:
        """Where Prometheus scrapes the cloud (``host``: the address the page was reached at, which
        is also the metrics server's when both listen on the cloud's host)."""
        if self.metrics_port < 0:
            return []
        host = f"[{host}]" if ":" in host else host
        return [{"name": "cloud", "url": f"http://{host}:{self.metrics_port}/metrics"}]


def _host_allowed(header: str, hosts: frozenset[str]) -> bool:
    """The Host header names an IP address, ``localhost`` or one of ``hosts`` (a DNS name an
    attacker controls and rebinds to this address is none of these)."""
    if header.startswith("["):  # [v6] or [v6]:port
        name = header[1:header.find("]")] if "]" in header else header
    else:  # name, v4, name:port or v4:port
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    name = name.lower().rstrip(".")
    if name in hosts or name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class OperatorOnly:
    """ASGI middleware: every request but ``/static`` passes the Host and peer checks first."""

    def __init__(self, app: ASGIApp, check_peer: Callable[[str], None], hosts: frozenset[str]):
        self.app = app
        self.check_peer = check_peer
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/static/"):
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            client = scope.get("client")
            try:
                if not _host_allowed(host, self.hosts):
                    raise PermissionDeniedError(f"host: the operator view answers to an IP address or localhost, "
                                                f"not {printable(host)!r}")
                self.check_peer(client[0] if client else "unix")
            except EcdError as e:
                await error_response(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def operator_app(view: OperatorView, check_peer: Callable[[str], None], token: str = "",
                 hosts: tuple[str, ...] = ()) -> Starlette:
    """The operator view's ASGI app. ``check_peer(host)`` raises for a caller's address that may
    not read; ``token`` ("" = read-only) unlocks the actions; ``hosts``: names besides IP
    addresses and ``localhost`` the page may be reached by."""

    def authorize(request: Request) -> None:
        if not token:
            raise PermissionDeniedError("operator: the view is read-only (the cloud was started without a panel_token_file)")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationError("operator: this action needs the header Authorization: Bearer <operator token>")
        if not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise AuthenticationError("operator: wrong operator token")

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    async def overview(request: Request) -> Response:
        data = await run_in_threadpool(view.overview)
        data["metrics"] = view.metrics(request.url.hostname or "127.0.0.1")
        data["actions"] = {"revoke": bool(token)}
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    async def device(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(view.device, request.path_params["device_id"]),
                            headers={"Cache-Control": "no-store"})

    async def revoke(request: Request) -> Response:
        check_same_origin(request, "this operator view")
        authorize(request)
        return JSONResponse({"revoked": True, "device": await run_in_threadpool(view.revoke, request.path_params["device_id"])})

    async def enrolment_code(request: Request) -> Response:
        check_same_origin(request, "this operator view")
        authorize(request)
        return JSONResponse(await run_in_threadpool(view.enrolment_code), headers={"Cache-Control": "no-store"})

    async def on_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, EcdError)
        response = error_response(e)
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="ecd operator"'
        return response

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/overview", overview),
            Route("/api/devices/{device_id}", device),
            Route("/api/devices/{device_id}/revoke", revoke, methods=["POST"]),
            Route("/api/enrolment-codes", enrolment_code, methods=["POST"]),
            static_mount(),
        ],
        middleware=[Middleware(OperatorOnly, check_peer=check_peer,
                               hosts=frozenset(h.lower().rstrip(".") for h in hosts if h))],
        exception_handlers={EcdError: on_error},
    )
