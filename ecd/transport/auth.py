"""Who may call what: one policy table and one server interceptor that applies it to every RPC.

Roles come from the caller's client certificate (:mod:`ecd.transport.tls`): ``device``, ``edge``,
``operator`` (and ``cloud``, which calls nothing). On a mutual-TLS server a call whose role is not
in the method's row is refused ``PERMISSION_DENIED`` before the handler runs; a method missing from
the table is refused too (deny by default). Finer checks stay in the handlers, which get the caller
from :func:`caller`: a device acts only on itself (its token), an edge node only on its own
registration and on devices assigned to it (``cloud_server.core``).

A plaintext server (loopback only, see :func:`ecd.transport.tls.check_plaintext`) cannot know roles: it lets
every call through to the handlers' own checks, as before TLS — and the cloud still takes operator
calls only from ``--operator-peers``.
"""

from __future__ import annotations

import contextvars
import inspect
from typing import Mapping

import grpc

from ecd.transport.tls import ANONYMOUS, Caller, caller_of

ANY = frozenset({"device", "edge", "operator", "cloud"})

POLICY: Mapping[str, frozenset[str]] = {
    # the cloud's data plane: only edge nodes stream to it (a device token cannot skip its edge)
    "/ecd.v1.CloudServer/Stream": frozenset({"edge"}),
    "/ecd.v1.CloudServer/StreamBatches": frozenset({"edge"}),
    "/ecd.v1.CloudServer/RegisterDevice": frozenset({"device"}),
    "/ecd.v1.CloudServer/UpdatePreferences": frozenset({"device", "edge"}),  # an edge relays a browser device's (its key proven)
    "/ecd.v1.CloudServer/GetAssignment": frozenset({"device", "edge"}),  # an edge checks the tokens it sees
    "/ecd.v1.CloudServer/ReportLocation": frozenset({"device"}),
    "/ecd.v1.CloudServer/WatchAssignment": frozenset({"device"}),
    "/ecd.v1.CloudServer/RegisterEdge": frozenset({"edge"}),
    "/ecd.v1.CloudServer/Heartbeat": frozenset({"edge"}),
    "/ecd.v1.CloudServer/DeregisterEdge": frozenset({"edge"}),
    "/ecd.v1.CloudServer/FetchPartition": frozenset({"device", "edge"}),
    "/ecd.v1.CloudServer/AddHead": frozenset({"operator"}),
    "/ecd.v1.CloudServer/ListHeads": frozenset({"operator", "device", "edge"}),
    "/ecd.v1.CloudServer/EnrolDevice": frozenset({"edge"}),  # a browser device's enrolment, relayed by its edge node
    "/ecd.v1.Scheduler/Place": frozenset({"operator"}),
    "/ecd.v1.Scheduler/GetPlacement": frozenset({"operator"}),
    "/ecd.v1.Scheduler/CreateCampaign": frozenset({"operator"}),
    "/ecd.v1.Scheduler/GetCampaign": frozenset({"operator"}),
    "/ecd.v1.Scheduler/ListReputations": frozenset({"operator"}),
    "/ecd.v1.Scheduler/SelectSite": frozenset({"operator"}),
    "/ecd.v1.Scheduler/RevokeDevice": frozenset({"operator"}),
    "/ecd.v1.EdgeNode/Stream": frozenset({"device"}),
    "/ecd.v1.EdgeNode/StreamBatches": frozenset({"device"}),
    "/grpc.health.v1.Health/Check": ANY,
    "/grpc.health.v1.Health/Watch": ANY,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANY,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": ANY,
}

_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("ecd_caller", default=ANONYMOUS)


def caller() -> Caller:
    """The caller of the call being handled (``ANONYMOUS`` on a plaintext server)."""
    return _CALLER.get()


def certificate_name(role: str) -> str | None:
    """The name on the caller's certificate when the caller plays ``role`` (a device presenting its
    token, the edge relaying a frame); None for another role or no certificate (plaintext)."""
    who = _CALLER.get()
    return who.name if who.role == role else None


def refusal(method: str, who: Caller) -> tuple[grpc.StatusCode, str] | None:
    """Why ``who`` may not call ``method``, as (status, message); None when it may."""
    allowed = POLICY.get(method)
    if allowed is None:
        return grpc.StatusCode.PERMISSION_DENIED, f"{method}: not in the authorization policy"
    if who.role == "":
        return grpc.StatusCode.UNAUTHENTICATED, f"{method}: needs a client certificate (roles: {', '.join(sorted(allowed))})"
    if who.role not in allowed:
        return grpc.StatusCode.PERMISSION_DENIED, f"{method}: {who} may not call this (roles: {', '.join(sorted(allowed))})"
    return None


class Authorizer(grpc.aio.ServerInterceptor):
    """Applies :data:`POLICY` to every call (``enforce``: on a mutual-TLS server), and makes the
    caller's identity available to the handler through :func:`caller`."""

    def __init__(self, enforce: bool):
        self.enforce = enforce

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method

        async def admit(context) -> Caller:
            who = caller_of(context) if self.enforce else ANONYMOUS
            if self.enforce and (why := refusal(method, who)) is not None:
                await context.abort(*why)
            return who

        for kind, make in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                           ("unary_stream", grpc.unary_stream_rpc_method_handler),
                           ("stream_unary", grpc.stream_unary_rpc_method_handler),
                           ("stream_stream", grpc.stream_stream_rpc_method_handler)):
            inner = getattr(handler, kind)
            if inner:
                return make(_guarded(inner, admit), handler.request_deserializer, handler.response_serializer)
        return handler


def _guarded(inner, admit):
    """``inner`` (any of the four call shapes) run after ``admit``, with the caller set for it."""
    if inspect.isasyncgenfunction(inner):
        async def streaming(request, context):
            _CALLER.set(await admit(context))  # this generator runs in its own task's context
            async for item in inner(request, context):
                yield item

        return streaming

    async def returning(request, context):  # a reply, or a stream written with context.write
        token = _CALLER.set(await admit(context))
        try:
            return await inner(request, context)
        finally:
            _CALLER.reset(token)

    return returning
