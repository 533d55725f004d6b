"""What ``start_cloud`` serves, option by option (cloud_server.service), and what a start that fails
gives back: server reflection naming both services (off with ``reflection``), gRPC health on its own
port for probes; /metrics and the operator view listening only on their own host, /metrics over TLS
with ``metrics_tls``; ``max_message_bytes`` capping what it takes in; the view's socket closed when
the gRPC port cannot be had, and the view's own port in use refused by name; and the view's peer check fed the caller's address the way
``operator_peers`` reads it (IPv4, IPv6, a unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud_server.config import CloudConfig
from cloud_server.service import _panel, start_cloud
from ecd import certs
from ecd.errors import ConfigError, EcdError, PermissionDeniedError
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc


def config(tmp_path: Path, **options: Any) -> CloudConfig:
    return replace(CloudConfig(), **{"db": str(tmp_path / "c.sqlite3"), "port": 0, "metrics_port": -1, **options})


def refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def services(target: str) -> set[str] | grpc.StatusCode:
    """The services reflection lists, or the status it answered."""
    with grpc.insecure_channel(target) as ch:
        try:
            (reply,) = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        except grpc.RpcError as e:
            return e.code()
    return {s.name for s in reply.list_services_response.service}


def test_reflection_names_both_services_and_the_health_port_answers_probes(tmp_path: Path) -> None:
    loop = LoopThread()
    try:
        cloud = loop.run(start_cloud(config(tmp_path, health_port=0)))
        try:
            wait_healthy(f"127.0.0.1:{cloud.port}")
            assert services(f"127.0.0.1:{cloud.port}") == {
                "ecd.v1.CloudServer", "ecd.v1.Scheduler", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
            assert cloud.server.health_port > 0
            with grpc.insecure_channel(f"127.0.0.1:{cloud.server.health_port}") as ch:  # a probe's own port: health only
                probe = health_pb2_grpc.HealthStub(ch)
                for service in ("", "ecd.v1.CloudServer", "ecd.v1.Scheduler"):
                    assert probe.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
                        health_pb2.HealthCheckResponse.SERVING, service
        finally:
            loop.run(cloud.stop(0))
        (tmp_path / "off").mkdir()
        cloud = loop.run(start_cloud(config(tmp_path / "off", reflection=False)))
        try:
            wait_healthy(f"127.0.0.1:{cloud.port}")
            assert services(f"127.0.0.1:{cloud.port}") == grpc.StatusCode.UNIMPLEMENTED
            assert cloud.server.health_port == -1
        finally:
            loop.run(cloud.stop(0))
    finally:
        loop.close()


def test_metrics_and_the_operator_view_listen_only_on_the_configured_host(tmp_path: Path) -> None:
    """127.0.0.2 is loopback too: a socket bound to every address would answer there."""
    loop = LoopThread()
    cloud = loop.run(start_cloud(config(tmp_path, metrics_port=0, panel_port=0)))
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{cloud.metrics_port}/metrics", timeout=10).read().decode()
        assert "ecd_registry_writable 1.0" in body
        assert not refused("127.0.0.1", cloud.panel_port)
        assert refused("127.0.0.2", cloud.metrics_port) and refused("127.0.0.2", cloud.panel_port)
    finally:
        loop.run(cloud.stop(0))
        loop.close()


def test_metrics_tls_serves_the_figures_only_over_tls_to_a_holder_of_the_ca(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    certs.init(folder, certs.default_holders(edges=1, devices=1))
    loop = LoopThread()
    cloud = loop.run(start_cloud(config(tmp_path, metrics_port=0, tls_dir=str(folder), metrics_tls=True)))
    try:
        scraper = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        scraper.check_hostname = False  # the cloud's certificate names its role, not this address
        scraper.load_cert_chain(str(folder / "operator.pem"), str(folder / "operator.key"))
        body = urllib.request.urlopen(f"https://127.0.0.1:{cloud.metrics_port}/metrics", context=scraper, timeout=10).read()
        assert b"ecd_registry_writable" in body
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{cloud.metrics_port}/metrics", timeout=10).read()  # plaintext
    finally:
        loop.run(cloud.stop(0))
        loop.close()


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on (the OS picks it)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_start_that_cannot_have_its_port_closes_the_views_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ecd.web

    views: list[ecd.web.WebServer] = []

    class Recorded(ecd.web.WebServer):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            views.append(self)

    monkeypatch.setattr(ecd.web, "WebServer", Recorded)
    loop = LoopThread()
    with taken_port() as port:
        try:
            for panel_port in (0, -1):
                with pytest.raises(ConfigError, match=rf"^port: cannot listen on 127\.0\.0\.1:{port} "):
                    loop.run(start_cloud(config(tmp_path, port=port, panel_port=panel_port)))
        finally:
            loop.close()
    assert len(views) == 1 and views[0].sock.fileno() == -1  # closed, not left to the garbage collector


def test_an_operator_view_port_in_use_is_refused_naming_the_option_and_the_port(tmp_path: Path) -> None:
    """The view listens on the port asked for, not on any free one: taken, the start is refused."""
    loop = LoopThread()
    with taken_port() as port:
        try:
            with pytest.raises(EcdError, match=rf"^panel_port: cannot listen on 127\.0\.0\.1:{port} \("):
                loop.run(start_cloud(config(tmp_path, panel_port=port)))
        finally:
            loop.close()


def peers_checked(cfg: CloudConfig, clients: list[tuple[str, int] | None], host: str = "127.0.0.1") -> tuple[list[str], list[int]]:
    """The peers ``_panel``'s view hands its peer check for the requests from ``clients`` (None: a
    unix socket's caller, which has no address) under the Host ``host``, and the status each got
    (the check refuses every peer)."""
    seen: list[str] = []

    def check(peer: str) -> None:
        seen.append(peer)
        raise PermissionDeniedError("operator: not here")

    view = _panel(cfg, None, -1, check, "")  # type: ignore[arg-type] (the refusal comes before the view reads its core)
    app = view.server.config.app
    statuses: list[int] = []

    async def request(client: tuple[str, int] | None) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": "/api/overview", "raw_path": b"/api/overview", "query_string": b"", "root_path": "",
                 "headers": [(b"host", f"{host}:{view.port}".encode())], "client": client, "server": ("127.0.0.1", view.port)}

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    try:
        for client in clients:
            asyncio.run(request(client))
    finally:
        view.sock.close()
    return seen, statuses


def test_the_views_peer_check_reads_the_caller_as_operator_peers_does(tmp_path: Path) -> None:
    cfg = config(tmp_path, panel_port=0)
    assert peers_checked(cfg, [("127.0.0.1", 50000), ("::1", 50001), None]) == (
        ["ipv4:127.0.0.1:0", "ipv6:[::1]:0", "unix:"], [403, 403, 403])


def test_the_view_answers_to_its_own_host_name(tmp_path: Path) -> None:
    """Beside IP addresses and localhost, the name it listens on (a name is refused otherwise: a
    page fetched under another name is how DNS rebinding reaches a loopback service)."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, 0)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    assert name != "localhost"
    cfg = config(tmp_path, panel_port=0, panel_host=name, insecure=True)
    assert peers_checked(cfg, [("127.0.0.1", 50000)], host=name) == (["ipv4:127.0.0.1:0"], [403])  # past the Host check
    assert peers_checked(cfg, [("127.0.0.1", 50000)], host="elsewhere.example") == ([], [403])  # refused before it


def test_max_message_bytes_caps_what_the_cloud_takes_in(tmp_path: Path) -> None:
    loop = LoopThread()
    cloud = loop.run(start_cloud(config(tmp_path, max_message_bytes=4096)))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{cloud.port}") as ch:
            stub = pb_grpc.CloudServerStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                stub.ListHeads(pb.ListHeadsRequest(model_id="m" * 5000), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "Received message larger than max" in e.value.details()
            with pytest.raises(grpc.RpcError) as e:
                stub.ListHeads(pb.ListHeadsRequest(model_id="m" * 3000), timeout=10)
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # taken in, and answered
    finally:
        loop.run(cloud.stop(0))
        loop.close()


def test_plaintext_beyond_loopback_is_served_when_forced(tmp_path: Path) -> None:
    """The refusal without ``insecure`` is tests/integration/test_security.py's."""
    loop = LoopThread()
    cloud = loop.run(start_cloud(config(tmp_path, host="0.0.0.0", insecure=True)))
    try:
        wait_healthy(f"127.0.0.1:{cloud.port}")
    finally:
        loop.run(cloud.stop(0))
        loop.close()
