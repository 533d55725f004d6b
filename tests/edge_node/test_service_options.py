"""What ``start_edge`` (edge_node.service) does with the options issues 30 and 32 added, against a
scripted cloud or none: the per-device quotas, the message caps and an address no device can dial
refused by name before anything starts; the device page refused without TLS or its extras, its
port in use refused by name and its connections capped; /metrics over TLS only with a certificate
(and with it, served so); the packing reaching the cloud link (several frames per message up to
the byte caps, or the one-frame call); the heartbeat's period and deadline, and the registration
it sends again; a refused registration leaving nothing serving; the waits a stop asks for. The
mutation gate reached these with no test of the edge's own noticing them broken."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from scripted_cloud import ScriptedCloud, serve, servers_started, until
from secure_tiers import start_secure_tiers, stop_secure_tiers

from ecd.codec import encode
from ecd.errors import ConfigError
from ecd.types import Encoding, Frame, Split
from edge_node import service
from edge_node.link import DeviceSession
from edge_node.service import EdgeConfig, start_edge

NOWHERE = EdgeConfig(cloud="127.0.0.1:1", metrics_port=-1)  # a refusal must come before the node dials it


def refusal(cfg: EdgeConfig) -> str:
    """The ConfigError ``start_edge`` raises for ``cfg`` (within 5 s: a check that let the node go on
    would leave it waiting 30 s for a cloud that is not there)."""
    with pytest.raises(ConfigError) as e:
        asyncio.run(asyncio.wait_for(start_edge(cfg), 5))
    return str(e.value)


@pytest.mark.parametrize("name", ["max_device_streams", "max_device_frames"])
def test_a_device_quota_below_1_is_refused_naming_the_option(name: str) -> None:
    assert refusal(replace(NOWHERE, **{name: 0})) == f"{name}: expected at least 1, got 0"


def test_a_message_cap_out_of_range_is_refused_naming_the_option() -> None:
    assert refusal(replace(NOWHERE, message_frames=0)).startswith("message_frames: expected 1..")
    assert refusal(replace(NOWHERE, message_bytes=0)) == "message_bytes: expected at least 1, got 0"


def test_batching_and_onnxruntime_settings_out_of_range_are_refused_naming_the_option() -> None:
    assert refusal(replace(NOWHERE, batch_instances=0)) == "batch_instances: expected 1..64, got 0"
    assert refusal(replace(NOWHERE, intra_op_threads=-1)) == "intra_op_threads: expected 0 (one per core) to 64, got -1"
    assert refusal(replace(NOWHERE, intra_op_threads=10_000)) == "intra_op_threads: expected 0 (one per core) to 64, got 10000"


def test_the_device_page_without_tls_dir_is_refused_naming_the_option() -> None:
    for port in (0, 8443):  # 0 (any free port) turns the page on too
        assert refusal(replace(NOWHERE, browser_port=port)).startswith("browser_port: the device page is served over HTTPS")


def test_the_device_page_without_its_extras_is_refused_before_anything_starts(monkeypatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wsproto" else find_spec(name, *a))
    for port in (0, 8443):  # 0 (any free port) turns the page on too
        said = refusal(replace(NOWHERE, browser_port=port, tls_dir="/nowhere"))
        assert said.startswith("browser_port: the device page needs cryptography and wsproto"), said


def test_metrics_over_tls_without_tls_dir_is_refused_naming_the_option() -> None:
    assert refusal(replace(NOWHERE, metrics_port=0, metrics_tls=True)).startswith("metrics_tls: needs tls_dir")


def test_an_advertised_address_no_device_can_dial_is_refused_before_the_node_listens(monkeypatch) -> None:
    started: list = []

    async def start_server(*args, **kwargs):
        started.append(args)
        raise AssertionError("the node listened")

    monkeypatch.setattr(service, "start_server", start_server)
    assert refusal(replace(NOWHERE, advertise="0.0.0.0:50061")).startswith("advertise: '0.0.0.0:50061' is not an address")
    assert started == []


async def edge_with(cloud: ScriptedCloud, tmp_path: Path, **options):
    """The scripted cloud's server, and an edge node started against it with ``options``."""
    server, _, channel = await serve(cloud)
    await channel.close()
    cfg = replace(EdgeConfig(), cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, model_dir=str(tmp_path), **options)
    try:
        return server, await start_edge(cfg)
    except BaseException:
        await server.stop(0)
        raise


def read_started(tmp_path: Path, read, **options):
    """``read(edge)`` of an edge node started against a scripted cloud with ``options``, then stopped."""
    cloud = ScriptedCloud()

    async def main():
        server, edge = await edge_with(cloud, tmp_path, **options)
        try:
            return read(edge)
        finally:
            await edge.stop(0, leave=False)
            await server.stop(0)

    return asyncio.run(main())


def test_quotas_of_1_are_taken_and_reach_the_node_in_order(tmp_path: Path) -> None:
    quotas = read_started(tmp_path, lambda edge: (edge.core.quotas.max_streams, edge.core.quotas.max_frames),
                          max_device_streams=1, max_device_frames=3)
    assert quotas == (1, 3)


def test_batch_instances_and_intra_op_threads_reach_the_node(tmp_path: Path) -> None:
    settings = read_started(tmp_path, lambda edge: (edge.core.batching.instances, edge.core.session_config.intra_op_threads),
                            batch_instances=2, intra_op_threads=1)
    assert settings == (2, 1)


@pytest.mark.parametrize("message_frames, batches", [(32, True), (2, True), (1, False)])
def test_the_cloud_link_sends_several_frames_per_message_unless_message_frames_is_1(tmp_path: Path, message_frames: int,
                                                                                  batches: bool) -> None:
    """The link opens its stream at once: StreamBatches (revision 3) when a message may carry more
    than one frame, the one-frame Stream otherwise."""
    cloud = ScriptedCloud()

    async def main():
        server, edge = await edge_with(cloud, tmp_path, message_frames=message_frames)
        try:
            await until(cloud, lambda: cloud.streams, "the cloud link's stream")
        finally:
            await edge.stop(0, leave=False)
            await server.stop(0)

    asyncio.run(main())
    assert len(cloud.streams) == 1 and len(cloud.messages) == (1 if batches else 0)


def test_the_node_beats_every_heartbeat_s_with_at_least_1_s_to_answer_and_registers_again_as_it_started(tmp_path: Path) -> None:
    cloud = ScriptedCloud()
    cloud.heartbeat_script = [[], grpc.StatusCode.NOT_FOUND]  # the second beat: the cloud forgot the node

    async def main():
        server, edge = await edge_with(cloud, tmp_path, heartbeat_s=0.05, capacity=7.5, position="1.5,2.5", activation_cost=2.0)
        try:
            await until(cloud, lambda: len(cloud.heartbeats) >= 4, "four heartbeats", timeout_s=5)
        finally:
            await edge.stop(0, leave=False)
            await server.stop(0)
        return edge

    edge = asyncio.run(main())
    assert [hb.edge_id for hb, _ in cloud.heartbeats][:4] == ["edge-1", "edge-1", "edge-2", "edge-2"] and edge.edge_id == "edge-2"
    assert all(r is not None and 0.5 < r <= 1.1 for _, r in cloud.heartbeats)  # max(heartbeat_s, 1 s)
    first, again = (r for r, _ in cloud.registrations)
    assert again == first and (again.endpoint, again.capacity, again.activation_cost) == (edge.endpoint, 7.5, 2.0)
    assert (again.position.lat, again.position.lon) == (1.5, 2.5)


@pytest.mark.parametrize("options", [{"message_bytes": 8}, {"max_tensor_bytes": 8}, {}])
def test_a_message_to_the_cloud_carries_frames_up_to_the_smaller_of_message_bytes_and_max_tensor_bytes(
        tmp_path: Path, options: dict) -> None:
    """Three frames of 8 tensor bytes queued at once: one message by default, one each under a cap of
    8 bytes (message_bytes, or max_tensor_bytes: a larger message than the largest frame taken is no use)."""
    cloud = ScriptedCloud()
    cloud.stream_script = [(3, "hold")]

    async def main():
        server, edge = await edge_with(cloud, tmp_path, **options)
        try:
            session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(8))
            for i in (1, 2, 3):  # queued before the link runs again
                await edge.core.link.submit(Frame("dev", i, "tok", "m", "v1", Split(1, 2), encode(np.zeros((1, 2), np.float32), Encoding.FLOAT32)),
                                            session)
            await until(cloud, lambda: cloud.messages and sum(cloud.messages[0]) == 3, "the three frames")
        finally:
            await edge.stop(0, leave=False)
            await server.stop(0)

    asyncio.run(main())
    assert cloud.messages[0] == ([1, 1, 1] if options else [3])


def test_a_refused_registration_ends_the_start_with_nothing_serving(tmp_path: Path, monkeypatch) -> None:
    cloud = ScriptedCloud()
    cloud.register_codes = [grpc.StatusCode.PERMISSION_DENIED]
    started = servers_started(monkeypatch)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        asyncio.run(edge_with(cloud, tmp_path))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and len(cloud.registrations) == 1
    (s,) = started
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch, pytest.raises(grpc.FutureTimeoutError):  # its port serves nothing
        grpc.channel_ready_future(ch).result(timeout=0.5)


def test_an_edge_with_metrics_tls_serves_its_figures_only_over_tls_to_a_holder_of_the_ca(tmp_path: Path) -> None:
    s = start_secure_tiers(tmp_path)
    edge = None
    try:
        edge = s.loop.run(start_edge(replace(EdgeConfig(), cloud=f"127.0.0.1:{s.cloud.port}", tls_dir=str(s.folder), tls_name="edge-2",
                                             metrics_port=0, metrics_tls=True, model_dir=str(tmp_path / "m2"))))
        ctx = ssl.create_default_context(cafile=str(s.folder / "ca.pem"))
        ctx.check_hostname = False  # the certificate names the role, not this address
        ctx.load_cert_chain(str(s.folder / "operator.pem"), str(s.folder / "operator.key"))
        url = f"https://127.0.0.1:{edge.metrics_port}/metrics"
        assert "# TYPE ecd_frames_total counter" in urllib.request.urlopen(url, context=ctx, timeout=5).read().decode()
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).read()  # plaintext
    finally:
        if edge is not None:
            s.loop.run(edge.stop(0, leave=False))
        stop_secure_tiers(s)


@pytest.mark.parametrize("grace, drained_for", [(None, 5.0), (0.25, 0.25), (0, 0)])
def test_a_stop_gives_the_frames_in_flight_its_grace_5_s_by_default_and_open_calls_half_a_second(
        tmp_path: Path, grace: float | None, drained_for: float) -> None:
    """What a stop waits for, asked of the core's drain and the server, not slept (SIGTERM's stop
    passes no grace: 5 s; a stop's grace of 0 is no grace, not the default)."""
    cloud = ScriptedCloud()
    asked: list = []

    async def main():
        server, edge = await edge_with(cloud, tmp_path)
        drain, stop_server = edge.core.drain, edge.server.stop

        async def drain_spy(timeout_s):
            asked.append(("drain", timeout_s))
            return await drain(timeout_s)

        async def stop_spy(grace_s):
            asked.append(("server", grace_s))
            return await stop_server(grace_s)

        edge.core.drain, edge.server.stop = drain_spy, stop_spy
        try:
            await edge.stop(grace, leave=False)
        finally:
            await server.stop(0)

    asyncio.run(main())
    assert asked == [("drain", drained_for), ("server", 0.5)]


def test_the_device_page_takes_max_browser_sessions_connections_at_once(tmp_path: Path) -> None:
    import httpx
    from browser_tiers import PageSocket, start_browser_tiers, stop_browser_tiers

    t = start_browser_tiers(tmp_path, edge_cfg=replace(EdgeConfig(), max_browser_sessions=1))
    try:
        # the browser extra's WebSocket protocol, the one check_extra asks for, even where uvicorn's
        # default would pick another installed one (websockets is, here)
        assert t.edge.browser.server.config.ws == "wsproto"
        ws = PageSocket(t)  # one phone's session holds the one connection
        try:
            assert "challenge" in json.loads(ws.recv(timeout=30))
            assert httpx.get(t.page_url, verify=t.ssl_context(), timeout=30).status_code == 503
        finally:
            ws.close()
    finally:
        stop_browser_tiers(t)


def test_a_device_page_port_in_use_is_refused_naming_the_option_and_the_port(tmp_path: Path, monkeypatch) -> None:
    import socket

    from ecd.errors import EcdError

    started = servers_started(monkeypatch)
    s = start_secure_tiers(tmp_path)
    busy = socket.socket()
    try:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EcdError) as e:
            s.loop.run(start_edge(replace(EdgeConfig(), cloud=f"127.0.0.1:{s.cloud.port}", tls_dir=str(s.folder), tls_name="edge-2",
                                          metrics_port=-1, browser_port=port, model_dir=str(tmp_path / "m2"))))
        assert str(e.value).startswith(f"browser_port: cannot listen on 127.0.0.1:{port} (")
        # nothing of the refused node is left: not registered with the cloud, its gRPC port closed
        assert [r.edge_id for r in s.cloud.core.edges.alive()] == [s.edge.edge_id]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", started[1].port), timeout=5).close()
    finally:
        busy.close()
        for server in started[1:]:  # the first is the tiers' own edge
            s.loop.run(server.stop(0))
        stop_secure_tiers(s)
