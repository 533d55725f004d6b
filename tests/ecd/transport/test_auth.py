"""The authorization policy and its interceptor (ecd.transport.auth).

The policy table must name every RPC the servers serve (deny by default would otherwise refuse a
new RPC to everyone, silently): checked against the service descriptors. The interceptor is checked
over real gRPC servers on loopback ports (mutual TLS and plaintext), with a stand-in service in each
of the four call shapes whose handlers answer with the caller they were given. The real services'
matrix (every RPC by every identity) is tests/integration/test_security.py.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from ecd import certs
from ecd.transport import auth, tls
from ecd.transport.auth import ANY, POLICY, caller, refusal
from ecd.transport.rpc import LoopThread, TransportConfig, start_server
from ecd.transport.tls import ANONYMOUS, Caller
from ecd.v1 import ecd_pb2 as pb

# reflection v1 is served by newer grpcio-reflection releases; the policy names it ahead of them
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
# in health's descriptor, but grpc.aio's HealthServicer does not implement it (UNIMPLEMENTED): left to
# deny by default (PERMISSION_DENIED under mutual TLS) rather than opened for a handler nobody runs
UNSERVED = {"/grpc.health.v1.Health/List"}


def served_methods() -> set[str]:
    """Every RPC of every service the servers register: ecd.v1's, health's and reflection's (as their
    descriptors name them)."""
    services = [*pb.DESCRIPTOR.services_by_name.values(), *health_pb2.DESCRIPTOR.services_by_name.values(),
                *reflection_pb2.DESCRIPTOR.services_by_name.values()]
    return {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}


def test_the_policy_names_every_rpc_served_and_nothing_else() -> None:
    assert set(POLICY) - {REFLECTION_V1} == served_methods() - UNSERVED
    assert all(roles and roles <= ANY for roles in POLICY.values())
    assert ANY == {"device", "edge", "operator", "cloud"}


def test_the_policy_rows() -> None:
    """The table, spelled out: widening a row (an edge revoking devices) or narrowing one fails here."""
    rows = {m.removeprefix("/ecd.v1."): "+".join(sorted(r)) for m, r in POLICY.items() if m.startswith("/ecd.v1.")}
    assert rows == {
        "CloudServer/Stream": "edge",
        "CloudServer/StreamBatches": "edge",
        "CloudServer/RegisterDevice": "device",
        "CloudServer/UpdatePreferences": "device+edge",  # an edge relays a browser device's
        "CloudServer/GetAssignment": "device+edge",
        "CloudServer/ReportLocation": "device",
        "CloudServer/WatchAssignment": "device",
        "CloudServer/RegisterEdge": "edge",
        "CloudServer/Heartbeat": "edge",
        "CloudServer/DeregisterEdge": "edge",
        "CloudServer/FetchPartition": "device+edge",
        "CloudServer/AddHead": "operator",
        "CloudServer/ListHeads": "device+edge+operator",
        "CloudServer/EnrolDevice": "edge",  # a browser device's enrolment, relayed by its edge node
        "Scheduler/Place": "operator",
        "Scheduler/GetPlacement": "operator",
        "Scheduler/CreateCampaign": "operator",
        "Scheduler/GetCampaign": "operator",
        "Scheduler/ListReputations": "operator",
        "Scheduler/SelectSite": "operator",
        "Scheduler/RevokeDevice": "operator",
        "EdgeNode/Stream": "device",
        "EdgeNode/StreamBatches": "device",
    }
    assert all(POLICY[m] == ANY for m in POLICY if not m.startswith("/ecd.v1."))


def test_refusals_name_the_method_the_caller_and_the_roles() -> None:
    revoke = "/ecd.v1.Scheduler/RevokeDevice"
    assert refusal(revoke, Caller("operator", "op")) is None
    assert refusal(revoke, Caller("edge", "edge-1")) == (
        grpc.StatusCode.PERMISSION_DENIED, f"{revoke}: edge:edge-1 may not call this (roles: operator)")
    heads = "/ecd.v1.CloudServer/ListHeads"
    assert refusal(heads, Caller("cloud", "cloud")) == (
        grpc.StatusCode.PERMISSION_DENIED, f"{heads}: cloud:cloud may not call this (roles: device, edge, operator)")
    assert refusal(heads, ANONYMOUS) == (
        grpc.StatusCode.UNAUTHENTICATED, f"{heads}: needs a client certificate (roles: device, edge, operator)")
    assert refusal("/ecd.v1.Nope/Call", Caller("operator", "op")) == (
        grpc.StatusCode.PERMISSION_DENIED, "/ecd.v1.Nope/Call: not in the authorization policy")
    assert refusal("/ecd.v1.Nope/Call", ANONYMOUS)[0] == grpc.StatusCode.PERMISSION_DENIED  # unknown first
    for method, roles in POLICY.items():
        for role in ANY:
            assert (refusal(method, Caller(role, "x")) is None) == (role in roles), (method, role)
        assert refusal(method, ANONYMOUS)[0] == grpc.StatusCode.UNAUTHENTICATED


def test_no_call_no_caller() -> None:
    assert caller() is ANONYMOUS


# --- the interceptor over real servers ---------------------------------------------------------------

# stand-ins, one per call shape, under names the policy has (their rows: see test_the_policy_rows)
UNARY = "/ecd.v1.CloudServer/ListHeads"  # device, edge, operator
REPLY_STREAM = "/ecd.v1.CloudServer/FetchPartition"  # device, edge: an async generator
WRITTEN_STREAM = "/ecd.v1.CloudServer/WatchAssignment"  # device: written with context.write
REQUEST_STREAM = "/ecd.v1.CloudServer/AddHead"  # operator
BOTH_STREAMS = "/ecd.v1.EdgeNode/Stream"  # device
UNLISTED = "/ecd.v1.CloudServer/NotInThePolicy"


def who() -> bytes:
    return str(caller()).encode()


async def unary(request: bytes, context) -> bytes:
    return who() + b" " + request


async def reply_stream(request: bytes, context):
    for _ in range(2):
        yield who()


async def written_stream(request: bytes, context) -> None:
    await context.write(who())
    await context.write(who())


async def request_stream(requests, context) -> bytes:
    return who() + b" " + b"".join([r async for r in requests])


async def both_streams(requests, context):
    async for r in requests:
        yield who() + b" " + r


def register(server: grpc.aio.Server) -> None:
    methods = {
        "ListHeads": grpc.unary_unary_rpc_method_handler(unary),
        "FetchPartition": grpc.unary_stream_rpc_method_handler(reply_stream),
        "WatchAssignment": grpc.unary_stream_rpc_method_handler(written_stream),
        "AddHead": grpc.stream_unary_rpc_method_handler(request_stream),
        "NotInThePolicy": grpc.unary_unary_rpc_method_handler(unary),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("ecd.v1.CloudServer", methods)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "ecd.v1.EdgeNode", {"Stream": grpc.stream_stream_rpc_method_handler(both_streams)})])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a holder of each role, and one whose role the runtime does not know."""
    root = tmp_path_factory.mktemp("auth") / "certs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(certs, "ROLES", (*certs.ROLES, "visitor"))  # the tool refuses to sign an unknown role
        certs.init(root, [certs.Holder(role, name) for role, name in
                          (("cloud", "cloud"), ("device", "device-1"), ("edge", "edge-1"), ("operator", "op"), ("visitor", "v"))])
    return root


def call(ch: grpc.Channel, method: str) -> str:
    """What the stand-in answered (the caller its handler saw), or the refusal's status and message."""
    try:
        if method in (UNARY, UNLISTED):
            return ch.unary_unary(method)(b"hi", timeout=10).decode()
        if method in (REPLY_STREAM, WRITTEN_STREAM):
            return "|".join(r.decode() for r in ch.unary_stream(method)(b"hi", timeout=10))
        if method == REQUEST_STREAM:
            return ch.stream_unary(method)(iter([b"a", b"b"]), timeout=10).decode()
        return "|".join(r.decode() for r in ch.stream_stream(method)(iter([b"a", b"b"]), timeout=10))
    except grpc.RpcError as e:
        return f"{e.code().name} {e.details()}"


ALL = (UNARY, REPLY_STREAM, WRITTEN_STREAM, REQUEST_STREAM, BOTH_STREAMS, UNLISTED)


def test_a_mutual_tls_server_admits_only_the_roles_in_each_row(folder: Path) -> None:
    """Each server is started in its test (not a shared fixture): the interceptor is built by the
    test that checks it, which is also what the mutation gate maps to it."""
    loop = LoopThread()
    server = loop.run(start_server(register, [], "127.0.0.1", 0, TransportConfig(), tls=tls.load(str(folder), "cloud")))
    target = f"127.0.0.1:{server.port}"
    try:
        got = {}
        for holder in ("device-1", "edge-1", "op", "cloud", "v"):
            with tls.channel(target, tls.load(str(folder), holder), "cloud") as ch:
                got[holder] = {m: call(ch, m) for m in ALL}
    finally:
        loop.run(server.stop(0))
        loop.close()
    assert got["device-1"][UNARY] == "device:device-1 hi"
    assert got["device-1"][REPLY_STREAM] == "device:device-1|device:device-1"
    assert got["device-1"][WRITTEN_STREAM] == "device:device-1|device:device-1"
    assert got["device-1"][BOTH_STREAMS] == "device:device-1 a|device:device-1 b"
    assert got["device-1"][REQUEST_STREAM] == f"PERMISSION_DENIED {REQUEST_STREAM}: device:device-1 may not call this (roles: operator)"
    assert got["edge-1"][UNARY] == "edge:edge-1 hi" and got["edge-1"][REPLY_STREAM] == "edge:edge-1|edge:edge-1"
    assert got["edge-1"][BOTH_STREAMS] == f"PERMISSION_DENIED {BOTH_STREAMS}: edge:edge-1 may not call this (roles: device)"
    assert got["edge-1"][WRITTEN_STREAM] == f"PERMISSION_DENIED {WRITTEN_STREAM}: edge:edge-1 may not call this (roles: device)"
    assert got["op"][REQUEST_STREAM] == "operator:op ab"
    assert got["op"][UNARY] == "operator:op hi"
    assert got["op"][REPLY_STREAM] == f"PERMISSION_DENIED {REPLY_STREAM}: operator:op may not call this (roles: device, edge)"
    assert got["cloud"][UNARY] == f"PERMISSION_DENIED {UNARY}: cloud:cloud may not call this (roles: device, edge, operator)"
    # a certificate of the right CA naming no role the runtime knows: no caller
    for m in ALL[:-1]:
        assert got["v"][m].startswith(f"UNAUTHENTICATED {m}: needs a client certificate (roles: "), got["v"][m]
    assert got["v"][UNARY].endswith("(roles: device, edge, operator)")
    for holder in got:  # deny by default, for everyone
        assert got[holder][UNLISTED] == f"PERMISSION_DENIED {UNLISTED}: not in the authorization policy"


def test_a_plaintext_server_lets_every_call_through_anonymously() -> None:
    """Roles need certificates: on plaintext every call reaches its handler, which sees no caller
    (the handlers' own checks, e.g. operator_peers, decide)."""
    loop = LoopThread()
    server = loop.run(start_server(register, [], "127.0.0.1", 0, TransportConfig()))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            got = {m: call(ch, m) for m in ALL}
    finally:
        loop.run(server.stop(0))
        loop.close()
    assert got == {UNARY: "anonymous hi", REPLY_STREAM: "anonymous|anonymous", WRITTEN_STREAM: "anonymous|anonymous",
                   REQUEST_STREAM: "anonymous ab", BOTH_STREAMS: "anonymous a|anonymous b", UNLISTED: "anonymous hi"}


def test_an_unknown_method_is_left_to_grpc() -> None:
    """No handler: the interceptor passes that on (UNIMPLEMENTED), it does not invent one."""
    loop = LoopThread()
    server = loop.run(start_server(register, [], "127.0.0.1", 0, TransportConfig()))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            assert call(ch, "/ecd.v1.Nobody/Nothing").startswith("UNIMPLEMENTED")
    finally:
        loop.run(server.stop(0))
        loop.close()


def test_the_caller_is_reset_after_a_unary_call() -> None:
    """The caller is set for the handler only: the context variable is back to anonymous after."""
    import asyncio

    seen = []

    async def handler(request, context):
        seen.append(auth.caller())
        return b""

    class Context:
        def auth_context(self):
            return {"x509_common_name": [b"operator:op"]}

        async def abort(self, code, details):
            raise AssertionError(details)

    async def scenario() -> None:
        async def continuation(details):
            return grpc.unary_unary_rpc_method_handler(handler)

        details = type("Details", (), {"method": UNARY, "invocation_metadata": ()})()
        guarded = await auth.Authorizer(enforce=True).intercept_service(continuation, details)
        await guarded.unary_unary(b"", Context())
        assert auth.caller() is ANONYMOUS

    asyncio.run(scenario())
    assert seen == [Caller("operator", "op")]
