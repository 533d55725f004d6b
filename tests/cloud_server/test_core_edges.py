"""The cloud core's edge nodes without gRPC, on a clock the test moves: registration once per
endpoint and owner, calls from their owner only, heartbeats, and the grace period of a lost device."""

from __future__ import annotations


import pytest

from cloud_server.assignment import MOVE_GRACE_S
from cloud_server.edges import REVOKED_NOTICE_S
from cloud_server.registry_storage import RegistryFullError
from ecd.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RequestError,
)
from ecd.limits import (
    MAX_ENDPOINT_CHARS,
)
from ecd.types import (
    EdgeHeartbeat,
    EdgeRegistration,
    Split,
    Position,
)

from cloud_core_harness import A_POS, B_POS, NEAR_A, Cloud, frame


def test_an_edge_registers_once_per_endpoint_and_owner(cloud: Cloud) -> None:
    e = cloud.edge(1, A_POS, owner="cert-a", cost=1.5, capacity=7.0)
    assert cloud.edge(1, B_POS, owner="cert-a") == e  # re-registering keeps the id
    rec = cloud.core.registry.edge(e)
    assert (rec.endpoint, rec.capacity, rec.lat, rec.lon, rec.activation_cost, rec.owner) == ("127.0.0.1:1", 10.0, B_POS.lat, B_POS.lon, 0.0, "cert-a")
    with pytest.raises(PermissionDeniedError, match=r"^endpoint: 127.0.0.1:1 is registered by another edge node$"):
        cloud.edge(1, owner="cert-b")
    assert cloud.core.edges.register(EdgeRegistration("127.0.0.1:2", 1.0)) != e  # default owner: ""
    assert cloud.core.registry.edge(cloud.edge(3, cost=0.0)).activation_cost == 0.0


@pytest.mark.parametrize("req,message", [
    (EdgeRegistration("localhost", 1.0), r"endpoint: expected host:port, got 'localhost'"),
    (EdgeRegistration("", 1.0), r"endpoint: must not be empty"),
    (EdgeRegistration("h:" + "1" * MAX_ENDPOINT_CHARS, 1.0), rf"endpoint: at most {MAX_ENDPOINT_CHARS} characters, got {MAX_ENDPOINT_CHARS + 2}"),
    (EdgeRegistration("h:1", 0.0), r"capacity: expected a finite value > 0, got 0.0"),
    (EdgeRegistration("h:1", float("inf")), r"capacity: expected a finite value > 0, got inf"),
    (EdgeRegistration("h:1", float("nan")), r"capacity: expected a finite value > 0, got nan"),
    (EdgeRegistration("h:1", 1.0, None, -0.5), r"activation_cost: expected a finite value >= 0, got -0.5"),
    (EdgeRegistration("h:1", 1.0, None, float("inf")), r"activation_cost: expected a finite value >= 0, got inf"),
    (EdgeRegistration("h:1", 1.0, Position(0.0, 181.0)), r"position.lon: expected degrees in \[-180, 180\], got 181.0"),
])
def test_a_bad_edge_registration_is_refused_by_field(cloud: Cloud, req: EdgeRegistration, message: str) -> None:
    with pytest.raises(RequestError, match="^" + message + "$"):
        cloud.core.edges.register(req)
    assert cloud.core.registry.edges() == []


def test_edge_calls_are_taken_from_their_owner_only(cloud: Cloud) -> None:
    e = cloud.edge(1, owner="cert-a")
    with pytest.raises(NotFoundError, match=r"^edge_id: 'nope' is not registered$"):
        cloud.core.edges.heartbeat(EdgeHeartbeat("nope", 1.0, 0), "cert-a")
    with pytest.raises(NotFoundError, match=r"^edge_id: 'nope' is not registered$"):
        cloud.core.edges.deregister("nope", "cert-a")
    with pytest.raises(PermissionDeniedError, match=rf"^edge_id: {e} belongs to another edge node$"):
        cloud.core.edges.heartbeat(EdgeHeartbeat(e, 1.0, 0), "cert-b")
    with pytest.raises(PermissionDeniedError, match=rf"^edge_id: {e} belongs to another edge node$"):
        cloud.core.edges.deregister(e)
    assert cloud.core.edges.heartbeat(EdgeHeartbeat(e, 2.5, 3), "cert-a") == []
    rec = cloud.core.registry.edge(e)
    assert (rec.load, rec.queue_depth) == (2.5, 3)
    free = cloud.edge(2)
    assert cloud.core.edges.heartbeat(EdgeHeartbeat(free, 0.0, 0)) == []  # an edge without a certificate: owner ""
    cloud.core.edges.deregister(free)
    assert [x.edge_id for x in cloud.core.edges.alive()] == [e]


def test_an_edge_that_left_was_last_heard_never(cloud: Cloud) -> None:
    """Leaving marks the edge's stored heartbeat 0 and forgets the one heard here: the operator view
    (its ``last_seen_unix``, shown as "never" at 0) tells an edge that left from one long silent."""
    e = cloud.edge(1)
    cloud.clock.now += 1.0
    cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0))
    assert cloud.core.edges.last_heard(cloud.core.registry.edge(e)) == cloud.clock.now
    cloud.core.edges.deregister(e)
    assert cloud.core.edges.last_heard(cloud.core.registry.edge(e)) == 0.0


def test_an_edge_heard_while_the_registry_disk_is_full_stays_alive(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat the registry cannot store still counts here: a full disk at the cloud must not
    make a live edge node look dead (nor hide the revocations it must hear of)."""
    e = cloud.edge(1)
    d = cloud.register()
    t0 = cloud.clock.now
    cloud.core.devices.revoke(d.device_id)

    def full(*_: object) -> bool:
        raise RegistryFullError("db: registry disk full (test): no space left on device")

    monkeypatch.setattr(cloud.core.registry, "heartbeat", full)
    cloud.clock.now = t0 + 2.0
    assert cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.5, 1)) == [d.device_id]
    assert cloud.core.registry.edge(e).last_seen_unix == t0  # not stored
    cloud.clock.now = t0 + 5.0  # 5 s after the stored heartbeat, 3 s after the one heard
    assert [x.edge_id for x in cloud.core.edges.alive()] == [e]
    cloud.clock.now = t0 + 5.001
    assert cloud.core.edges.alive() == []


def test_an_edge_removed_between_the_checks_is_named(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent deregistration (simulated: the registry answers that nothing was removed)."""
    e = cloud.edge(1)
    monkeypatch.setattr(cloud.core.registry, "remove_edge", lambda edge_id: False)
    monkeypatch.setattr(cloud.core.registry, "heartbeat", lambda *a: False)
    with pytest.raises(NotFoundError, match=rf"^edge_id: {e!r} is not registered$"):
        cloud.core.edges.deregister(e)
    with pytest.raises(NotFoundError, match=rf"^edge_id: {e!r} is not registered$"):
        cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0))


def test_heartbeats_name_the_devices_revoked_in_the_last_minute(cloud: Cloud) -> None:
    e = cloud.edge(1)
    a, b = cloud.register("a"), cloud.register("b")
    t0 = cloud.clock.now
    cloud.core.devices.revoke(b.device_id)
    cloud.clock.now = t0 + 10
    cloud.core.devices.revoke(a.device_id)
    with pytest.raises(AuthenticationError):
        cloud.core.devices.authenticate(a.device_id, a.token)
    cloud.clock.now = t0 + REVOKED_NOTICE_S - 0.5
    assert cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0)) == sorted([a.device_id, b.device_id])
    cloud.clock.now = t0 + REVOKED_NOTICE_S + 0.5
    assert cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0)) == [a.device_id]
    with pytest.raises(NotFoundError, match=r"^device_id: 'zz\\\\x00' is not registered$"):
        cloud.core.devices.revoke("zz\x00")


def test_an_edge_may_serve_a_device_it_lost_for_the_grace_period_only(cloud: Cloud) -> None:
    a = cloud.edge(1, owner="cert-a")
    b = cloud.edge(2, owner="cert-b")
    d = cloud.register()
    home, other = (a, "cert-a"), (b, "cert-b")
    if d.edge_id == b:
        home, other = other, home
    assert cloud.core.devices.get_assignment(d.device_id, d.token, home[1]).edge_id == home[0]
    with pytest.raises(PermissionDeniedError, match=rf"^device_id: device {d.device_id} is not assigned to this edge node$"):
        cloud.core.devices.get_assignment(d.device_id, d.token, other[1])
    t0 = cloud.clock.now
    cloud.core.assignment.move({d.device_id: other[0]}, {d.device_id: home[0]})
    assert cloud.core.assignment._moved_from == {d.device_id: {home[0]: t0}}
    cloud.clock.now = t0 + MOVE_GRACE_S - 0.01
    cloud.core.edges.heartbeat(EdgeHeartbeat(a, 0.0, 0), "cert-a")
    cloud.core.edges.heartbeat(EdgeHeartbeat(b, 0.0, 0), "cert-b")
    for owner in ("cert-a", "cert-b"):
        assert cloud.core.devices.get_assignment(d.device_id, d.token, owner).edge_id == other[0]
    cloud.clock.now = t0 + MOVE_GRACE_S
    cloud.core.edges.heartbeat(EdgeHeartbeat(a, 0.0, 0), "cert-a")
    cloud.core.edges.heartbeat(EdgeHeartbeat(b, 0.0, 0), "cert-b")
    with pytest.raises(PermissionDeniedError):
        cloud.core.devices.get_assignment(d.device_id, d.token, home[1])
    cloud.core.assignment.move({d.device_id: other[0]}, {d.device_id: other[0]})  # not a move: nothing remembered
    assert cloud.core.assignment._moved_from == {d.device_id: {home[0]: t0}}


def test_devices_per_edge_is_published_at_every_write_of_a_devices_edge(cloud: Cloud) -> None:
    """The metric the operator graphs follows the data plane: a registration, a move on a new
    position and a device leaving a lost edge change it at once, not at the next placement."""
    def gauge() -> dict[str, float]:
        return {edge: cloud.prom.get_sample_value("ecd_devices_per_edge", {"edge_id": edge}) for edge in (a, b)}

    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    d = cloud.register(position=NEAR_A)
    cloud.core.placement.place()
    home = cloud.core.registry.device(d.device_id).edge_id
    assert gauge() == {home: 1.0, ({a, b} - {home}).pop(): 0.0}
    e = cloud.register("e")  # no position: the least loaded alive edge
    counts = cloud.core.registry.devices_per_edge(cloud.core.leases.live_since())
    assert gauge() == {k: float(counts.get(k, 0)) for k in (a, b)} and sum(gauge().values()) == 2.0
    t0 = cloud.clock.now
    cloud.clock.now = t0 + 10  # both edges silent; only b comes back
    cloud.core.edges.heartbeat(EdgeHeartbeat(b, 0.0, 0))
    cloud.core.devices.get_assignment(d.device_id, d.token)  # d's edge is lost: it moves to b when it asks
    cloud.core.devices.get_assignment(e.device_id, e.token)
    assert gauge() == {a: 0.0, b: 2.0} == {k: float(v) for k, v in {a: 0, **cloud.core.registry.devices_per_edge()}.items()}


def test_a_device_with_no_position_whose_edge_is_lost_goes_to_the_least_loaded_live_edge(cloud: Cloud) -> None:
    """With a placement applied, a device that never gave its position is not placed by distance
    when its edge is lost: it asks for its assignment and gets the least loaded live edge."""
    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    p = cloud.register("p", position=NEAR_A)
    cloud.core.placement.place()
    assert cloud.core.registry.device(p.device_id).edge_id == a
    e = cloud.register("e")  # no position: the least loaded edge, b
    assert e.edge_id == b
    cloud.clock.now += 10  # both edges silent; only a comes back
    cloud.core.edges.heartbeat(EdgeHeartbeat(a, 0.0, 0))
    got = cloud.core.devices.get_assignment(e.device_id, e.token)
    assert (got.edge_id, got.edge_endpoint) == (a, "127.0.0.1:1")


@pytest.mark.parametrize("alias", ["localhost:{p}", "LOCALHOST:{p}", "127.1:{p}", "127.0.0.001:{p}", "2130706433:{p}",
                                   "[::ffff:127.0.0.1]:{p}", "127.0.0.1:0{p}"])
def test_an_edges_endpoint_cannot_be_taken_by_another_under_an_alias(cloud: Cloud, alias: str) -> None:
    """Every spelling of one address is that address: a second edge certificate registering an
    alias of the first edge's endpoint is refused, and the first keeps its devices' frames."""
    first = cloud.edge(4242, owner="cert-a")
    with pytest.raises(PermissionDeniedError, match=r"^endpoint: 127\.0\.0\.1:4242 is registered by another edge node$"):
        cloud.core.edges.register(EdgeRegistration(alias.format(p=4242), 1e9), "cert-b")
    assert cloud.core.edges.register(EdgeRegistration(alias.format(p=4242), 10.0), "cert-a") == first  # the owner may
    assert [e.endpoint for e in cloud.core.registry.edges()] == ["127.0.0.1:4242"]


def test_a_relayed_frame_is_answered_only_from_the_devices_edge(cloud: Cloud) -> None:
    """Under TLS the cloud knows which edge certificate relays a frame: an edge that is not the
    device's (a fake or compromised one holding a stolen token) gets a refusal naming device_id;
    the device's own edge, and the one it left within the grace period, are answered."""
    a, b = cloud.edge(1, owner="cert-a"), cloud.edge(2, owner="cert-b")
    d = cloud.register()
    home, other = ("cert-a", "cert-b") if d.edge_id == a else ("cert-b", "cert-a")
    ok = cloud.core.process(frame(d, Split(2, 5)), home)
    assert ok.ok and ok.heads, ok.error
    refused = cloud.core.process(frame(d, Split(2, 5), frame_id=2), other)
    assert refused.error.status == "PERMISSION_DENIED"
    assert refused.error.message == f"device_id: device {d.device_id} is not assigned to this edge node"
    assert cloud.core.process(frame(d, Split(2, 5), frame_id=3)).ok  # plaintext: no edge certificate to check
    cloud.core.assignment.move({d.device_id: b if d.edge_id == a else a}, {d.device_id: d.edge_id})
    assert cloud.core.process(frame(d, Split(2, 5), frame_id=4), home).ok  # within MOVE_GRACE_S of the move
    assert cloud.core.process(frame(d, Split(2, 5), frame_id=5), other).ok


@pytest.mark.parametrize("endpoint", ["a\x00b:1", "host:٣", "host:", ":1", "host:0", "host:65536"])
def test_an_endpoint_that_is_not_host_port_is_refused_by_name(cloud: Cloud, endpoint: str) -> None:
    with pytest.raises(RequestError, match=r"^endpoint: "):
        cloud.core.edges.register(EdgeRegistration(endpoint, 1.0))
