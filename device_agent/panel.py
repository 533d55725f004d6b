"""The device's control panel (paper 000, Fig. 2): the user's energy/privacy curve, a privacy slider
and a floor that re-split the running device, and live figures of the stream.

A Starlette app over a running :class:`~device_agent.agent.DeviceAgent`; it only reads figures
the agent keeps anyway and calls :meth:`~device_agent.agent.DeviceAgent.change_preferences`, so
it is never on a frame's path, and it is off unless ``--panel-port`` asks for it. It listens on
loopback by default: whoever reaches it steers this device's privacy.

Because a web page from anywhere can make the user's browser send requests to loopback, a change
is only taken as a JSON body (a cross-site form cannot send one without the browser asking first,
and the panel never answers that question), from a page of this panel's own origin, with a Host
header naming this panel (no DNS rebinding), carrying this panel's session token in
``X-ECD-Session`` (a random value the page reads from ``/api/state``, which no other origin can
read: a request forged from elsewhere cannot know it).

API: ``GET /api/state`` (everything the page shows), ``GET /api/preview?w_privacy=&min_split=``
(the curve for other preferences, nothing changed), ``POST /api/preferences``
``{"device_id", "w_privacy", "min_split"}``. Errors are JSON naming the field, with a 4xx status.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ecd.errors import EcdError, PermissionDeniedError, PreconditionError, RequestError
from ecd.leakage import protection
from ecd.split import Preferences, SplitDecision
from ecd.web import check_same_origin, error_response, json_body, static_mount

DeviceAgent = Any  # a connected device_agent.agent.DeviceAgent (not imported: the agent imports this module)

PAGE = Path(__file__).with_name("panel.html")


def curve(decision: SplitDecision) -> list[dict[str, Any]]:
    """The decision's rows (``SplitDecision.to_dict``: bytes, compute and radio energy, the privacy
    term ``p_priv``, the utility — None where the split is not a candidate) with the device's
    estimated energy per frame, compute + radio, that the page draws."""
    return [{**row, "energy_j": row["e_comp_j"] + row["e_comm_j"]} for row in decision.to_dict()["splits"]]


def _ms(seconds: float) -> float | None:
    return round(seconds * 1e3, 3) if math.isfinite(seconds) else None


def state(agent: DeviceAgent) -> dict[str, Any]:
    """What the page shows: who the device is, the current preferences and curve, the live figures."""
    core, a = agent.core, agent.core.assignment
    assert a is not None and core.manifest is not None
    decision = core.decision
    if decision is None or decision.preferences != core.prefs:
        decision, _ = agent.decide(core.prefs)
    split = a.split.device
    energy = [float(decision.e_comp[b] + decision.e_comm[b]) for b in range(len(decision.utility))]
    status = agent.status()
    live = agent.tally.snapshot()
    ok = live["answered"] - live["errors"]
    live.update(
        sent=status.sent,
        in_flight=status.in_flight,
        duplicates_dropped=status.duplicates_dropped,
        resplits=status.resplits,
        latency_p50_ms=_ms(agent.tally.percentile(50)),
        latency_p95_ms=_ms(agent.tally.percentile(95)),
        bytes_per_frame=live["uplink_bytes"] / ok if ok else None,
        energy_per_frame_j=energy[split],
        energy_total_j=sum(energy[b] * n for b, n in live["per_split"].items() if b < len(energy)),
    )
    live["per_split"] = {str(b): n for b, n in sorted(live["per_split"].items())}
    return {
        "device_id": a.device_id,
        "name": core.name,
        "model": f"{core.manifest.model_id}@{core.manifest.version}",
        "blocks": core.manifest.n_blocks,
        "profile": core.profile.name,
        "radio": core.radio.name,
        "encoding": core.encoding.value,
        "edge_id": a.edge_id,
        "split": split,
        "split_edge": a.split.edge,
        "pinned_split": agent.cfg.split if agent.cfg.split >= 0 else None,
        "recommended": decision.recommended,
        "w_energy": core.prefs.w_energy,
        "w_privacy": core.prefs.w_privacy,
        "min_split": core.prefs.min_split,
        "privacy_term": decision.privacy_source,
        # a learned privacy level runs as its own model: what it protects at this split, as measured
        "privacy_level": core.level,
        "protection": protection(core.family, core.level, split) if core.level is not None and core.family else None,
        "streaming": status.streaming,
        "state": status.state,
        "resplitting": status.pending_split is not None,
        "preferences_error": status.preferences_error,
        "curve": curve(decision),
        "live": live,
    }


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise RequestError(f"{name}: expected an integer, got {value!r}")
    return int(value)


def _float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def _query_number(request: Request, name: str, cast: type) -> Any:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return cast(raw)
    except ValueError:
        raise RequestError(f"{name}: expected a number, got {raw!r}") from None


def create_app(agent: DeviceAgent, allowed_hosts: list[str]) -> Starlette:
    """The panel for ``agent``; requests must name one of ``allowed_hosts`` in their Host header."""

    def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html", headers={"Cache-Control": "no-store"})

    session = secrets.token_urlsafe(24)  # new at every start: a page of an older run must reload

    def get_state(request: Request) -> Response:
        return JSONResponse({**state(agent), "session": session})

    def preview(request: Request) -> Response:
        try:
            prefs: Preferences = agent.check_preferences(_query_number(request, "w_privacy", float),
                                                         _query_number(request, "min_split", int))
            decision, split = agent.decide(prefs)
        except EcdError as e:
            return error_response(e)
        return JSONResponse({"w_privacy": prefs.w_privacy, "min_split": prefs.min_split, "recommended": decision.recommended,
                             "split": split, "curve": curve(decision)})

    async def preferences(request: Request) -> Response:
        try:
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise RequestError("content-type: expected application/json")
            check_same_origin(request, "this panel")
            if not secrets.compare_digest(request.headers.get("x-ecd-session", "").encode(), session.encode()):
                raise PermissionDeniedError("x-ecd-session: missing or not this panel's session (reload the page)")
            body = await json_body(request)
            unknown = set(body) - {"device_id", "w_privacy", "min_split"}
            if unknown:
                raise RequestError(f"{sorted(unknown)[0][:64]}: not a preference (w_privacy, min_split)")
            device_id = body.get("device_id")
            if device_id is not None and device_id != agent.core.assignment.device_id:
                raise PreconditionError(f"device_id: this agent is device {agent.core.assignment.device_id}, not {str(device_id)[:64]!r}"
                                        " (reload the page)")
            w_privacy, min_split = _float(body.get("w_privacy"), "w_privacy"), _int(body.get("min_split"), "min_split")
            await run_in_threadpool(agent.change_preferences, w_privacy, min_split)
        except EcdError as e:  # a cloud that refuses the change too (PeerError: 502)
            return error_response(e)
        return JSONResponse({**state(agent), "session": session})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", get_state),
            Route("/api/preview", preview),
            Route("/api/preferences", preferences, methods=["POST"]),
            static_mount(),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)],
    )


def start_panel(agent: DeviceAgent, host: str, port: int):
    """Serve the panel in a thread of its own; returns the :class:`~ecd.web.WebServer`."""
    from ecd.web import WebServer

    hosts = sorted({host, "127.0.0.1", "localhost", "::1", "[::1]"})
    return WebServer(create_app(agent, hosts), host, port).start()
