"""The edge node's start and stop against a scripted cloud (edge_node.service): its wait for a cloud
that never answers, the plaintext checks naming the option, the link's message limit, and the
deregistration's deadline, on a stop and after a device page that failed, and a start that fails
(or is cancelled) leaving nothing behind: no server, no open channel, no temporary model folder.
The mutation gate found these unpinned."""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import pytest
from scripted_cloud import ScriptedCloud, edge_on, serve, servers_started, until

from ecd import certs
from ecd.config import MiB
from ecd.errors import ConfigError
from ecd.transport.rpc import cancel_all
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node import service
from edge_node.service import EdgeConfig, start_edge


def test_a_leaving_node_waits_at_most_2_s_for_its_deregistration(tmp_path: Path) -> None:
    cloud = ScriptedCloud()

    async def main():
        server, edge = await edge_on(cloud, tmp_path)
        try:
            await asyncio.wait_for(edge.stop(0, leave=True), 10)  # the cloud never answers the deregistration
        finally:
            await server.stop(0)

    asyncio.run(main())
    (remaining,) = cloud.deregistrations
    assert remaining is not None and 1.0 < remaining <= 2.5


def test_a_stop_cancelled_while_it_deregisters_ends_cancelled(tmp_path: Path) -> None:
    cloud = ScriptedCloud()

    async def main():
        server, edge = await edge_on(cloud, tmp_path)
        try:
            stopping = asyncio.create_task(edge.stop(0, leave=True))
            await until(cloud, lambda: cloud.deregistrations, "the deregistration")
            stopping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stopping
        finally:
            await edge.server.stop(0)
            await cancel_all(edge.tasks)
            await edge.channel.close()
            await server.stop(0)

    asyncio.run(main())


def test_a_node_whose_cloud_never_answers_gives_up_after_30_s_naming_the_option(short_waits, monkeypatch, tmp_path: Path) -> None:
    """A cloud address that accepts connections and never speaks gRPC: the node waits 30 s (shortened
    here: the wait asked for is recorded), then says which option to fix and serves nothing."""
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen()
    cloud = f"127.0.0.1:{mute.getsockname()[1]}"
    started = servers_started(monkeypatch)
    try:
        with pytest.raises(ConnectionError) as e:
            asyncio.run(start_edge(EdgeConfig(cloud=cloud, metrics_port=-1, model_dir=str(tmp_path))))
    finally:
        mute.close()
    assert str(e.value) == f"cloud: no cloud server answers at {cloud} (--cloud)"
    assert short_waits == [30]
    (s,) = started
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch, pytest.raises(grpc.FutureTimeoutError):  # its port serves nothing
        grpc.channel_ready_future(ch).result(timeout=0.5)


@pytest.fixture
def short_waits(monkeypatch) -> list:
    """The node's wait for its cloud, recorded and cut to 0.2 s (the cloud addresses here never answer)."""
    asked: list = []
    real_wait_for = asyncio.wait_for

    async def wait_for(aw, timeout):
        if sys._getframe(1).f_globals.get("__name__") == service.__name__:
            asked.append(timeout)
            timeout = 0.2
        return await real_wait_for(aw, timeout)

    monkeypatch.setattr(asyncio, "wait_for", wait_for)
    return asked


def test_a_cloud_beyond_loopback_needs_tls_or_insecure_and_the_refusal_names_the_option(short_waits, tmp_path: Path) -> None:
    far = "192.0.2.1:50051"  # TEST-NET-1: never answers
    base = EdgeConfig(cloud=far, metrics_port=-1, model_dir=str(tmp_path / "m"))
    with pytest.raises(ConfigError) as e:
        asyncio.run(start_edge(base))
    assert str(e.value).startswith("cloud: ") and "192.0.2.1" in str(e.value)
    with pytest.raises(ConnectionError):  # forced: dialled (and it never answers)
        asyncio.run(start_edge(replace(base, insecure=True)))
    folder = tmp_path / "certs"
    certs.init(folder, certs.default_holders(edges=1, devices=0))
    with pytest.raises(ConnectionError):  # under TLS: dialled
        asyncio.run(start_edge(replace(base, tls_dir=str(folder), tls_name="edge-1")))


def test_the_link_to_the_cloud_takes_messages_up_to_max_message_bytes(tmp_path: Path) -> None:
    """gRPC's own default would refuse a reply over 4 MiB from the cloud."""
    class BigAnswers(ScriptedCloud):
        async def GetAssignment(self, request, context):
            return pb.Assignment(device_id=request.device_id, model_id="m" * (5 * MiB))

    cloud = BigAnswers()

    async def main():
        server, edge = await edge_on(cloud, tmp_path)
        try:
            reply = await pb_grpc.CloudServerStub(edge.channel).GetAssignment(pb.GetAssignmentRequest(device_id="d"), timeout=10)
            return len(reply.model_id)
        finally:
            await edge.stop(0, leave=False)
            await server.stop(0)

    assert asyncio.run(main()) == 5 * MiB


def test_serving_beyond_loopback_in_plaintext_must_be_forced(tmp_path: Path) -> None:
    cloud = ScriptedCloud()

    async def main():
        server, _, channel = await serve(cloud)
        await channel.close()
        base = EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", host="0.0.0.0", metrics_port=-1, model_dir=str(tmp_path))
        try:
            with pytest.raises(ConfigError) as e:
                await start_edge(base)
            assert str(e.value).startswith("host: ")
            edge = await start_edge(replace(base, insecure=True))  # forced
            await edge.stop(0, leave=False)
        finally:
            await server.stop(0)
        return edge

    edge = asyncio.run(main())
    # listening on 0.0.0.0 it tells devices its address on the route to the cloud, never 0.0.0.0
    assert edge.endpoint == f"127.0.0.1:{edge.port}" and [r.endpoint for r, _ in cloud.registrations] == [edge.endpoint]


def page_fails(monkeypatch) -> None:
    """The device page refused after the registration (as when its port is taken)."""
    def page(cfg: EdgeConfig, core) -> None:
        raise ConfigError("browser_port: cannot listen (scripted)")

    monkeypatch.setattr(service, "_browser_page", page)


def test_a_node_whose_device_page_fails_leaves_within_2_s_stops_serving_and_closes_its_channel(tmp_path: Path, monkeypatch) -> None:
    """The page failing after the registration (its port taken: tests/edge_node/test_service_options.py
    takes one for real): the deregistration waits at most 2 s for a cloud that never answers it, and the
    caller gets the page's refusal, not the deregistration's; nothing of the node is left."""
    cloud = ScriptedCloud()
    started = servers_started(monkeypatch)
    channels: list[grpc.aio.Channel] = []
    real_channel = service.tls_.aio_channel
    monkeypatch.setattr(service.tls_, "aio_channel", lambda *a, **kw: channels.append(real_channel(*a, **kw)) or channels[-1])
    page_fails(monkeypatch)

    async def main():
        server, _, channel = await serve(cloud)
        await channel.close()
        try:
            with pytest.raises(ConfigError, match=r"^browser_port: cannot listen \(scripted\)$"):
                await asyncio.wait_for(start_edge(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, model_dir=str(tmp_path))), 10)
        finally:
            await server.stop(0)
        return channels[0].get_state()

    assert asyncio.run(main()) == grpc.ChannelConnectivity.SHUTDOWN
    (remaining,) = cloud.deregistrations
    assert remaining is not None and 1.0 < remaining <= 2.5
    (s,) = started
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()


@dataclass
class Made:
    """The cloud channels and temporary model folders a start made (to check a failed one left none)."""

    channels: list[grpc.aio.Channel] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)


@pytest.fixture
def made(monkeypatch) -> Made:
    m = Made()
    real_channel, real_folder = service.tls_.aio_channel, service.tempfile.TemporaryDirectory

    def channel(*a, **kw):
        m.channels.append(real_channel(*a, **kw))
        return m.channels[-1]

    def folder(*a, **kw):
        made_folder = real_folder(*a, **kw)
        m.folders.append(Path(made_folder.name))
        return made_folder

    monkeypatch.setattr(service.tls_, "aio_channel", channel)
    monkeypatch.setattr(service.tempfile, "TemporaryDirectory", folder)
    return m


def test_a_start_cancelled_while_it_deregisters_after_its_page_failed_ends_cancelled_leaving_nothing(made: Made, monkeypatch) -> None:
    """Cancelled in the middle of undoing itself, the start still stops serving, closes its channel
    and removes its temporary model folder, and ends cancelled."""
    cloud = ScriptedCloud()
    started = servers_started(monkeypatch)
    page_fails(monkeypatch)

    async def main():
        server, _, channel = await serve(cloud)
        await channel.close()
        try:
            starting = asyncio.create_task(start_edge(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1)))
            await until(cloud, lambda: cloud.deregistrations, "the deregistration")
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
            return made.channels[0].get_state()
        finally:
            await server.stop(0)

    assert asyncio.run(main()) == grpc.ChannelConnectivity.SHUTDOWN
    (s,) = started
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
    (folder,) = made.folders
    assert not folder.exists()


def test_a_node_whose_advertised_address_is_refused_leaves_nothing(made: Made, monkeypatch) -> None:
    """A refusal found once the port is bound (an ``--advertise`` of port 0 is filled with it) undoes
    the start: its server, its channel to the cloud and its temporary model folder."""
    started = servers_started(monkeypatch)
    refused = ConfigError("advertise: refused (scripted)")

    def advertised(advertise: str, host: str, port: int, *route) -> str:
        if route:  # the call once the port is bound (the early check has no route)
            raise refused
        return f"{host}:{port}"

    monkeypatch.setattr(service, "advertised_endpoint", advertised)
    with pytest.raises(ConfigError) as e:
        asyncio.run(start_edge(EdgeConfig(cloud="127.0.0.1:9", metrics_port=-1, advertise="127.0.0.1:0")))
    assert e.value is refused
    (s,) = started
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
    assert [c.get_state() for c in made.channels] == [grpc.ChannelConnectivity.SHUTDOWN]
    (folder,) = made.folders
    assert not folder.exists()
