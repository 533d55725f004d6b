"""gRPC plumbing shared by the three services: options, the server factory, health, reflection,
and waiting for a peer to be healthy.

Every channel and server option is set here, in one place.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ecd.transport import tls as tls_
from ecd.config import MiB
from ecd.errors import ConfigError
from ecd.transport.catalog import to_status
from ecd.transport.tls import Tls

log = logging.getLogger("ecd.transport.rpc")


@dataclass(frozen=True)
class TransportConfig:
    max_message_bytes: int = 64 * MiB  # gRPC's default 4 MiB is too small for large activations
    max_receive_bytes: int = 0  # what a server takes in, if less than max_message_bytes (ecd.limits.frame_receive_cap); 0 = that
    keepalive_time_s: float = 30.0  # ping an idle connection this often
    keepalive_timeout_s: float = 10.0  # and drop it if the ping is not answered in time


def grpc_options(cfg: TransportConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", min(cfg.max_receive_bytes, cfg.max_message_bytes) if cfg.max_receive_bytes
         else cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # servers must accept the clients' keepalive pings instead of answering GOAWAY
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(cfg.keepalive_time_s * 1000) // 2),
        # and never answer a client's pings with GOAWAY "too_many_pings" (seen under load, cutting
        # idle assignment watches and edge streams)
        ("grpc.http2.max_ping_strikes", 0),
        # a client finds a restarted (or another) server within ~2 s, not after gRPC's default
        # reconnect backoff (up to 120 s: frames stalled 23 s after a cloud replica came back)
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def _check_free(host: str, port: int) -> None:
    """A clear error for a port in use, before gRPC logs its own (it would bind nothing and say so
    in a line of its C core's log)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            # as a server binds: a port whose old connections linger (TIME_WAIT) after a restart is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        raise ConfigError(f"port: cannot listen on {host}:{port} ({e.strerror or e})") from None


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string: ``ipv4:10.0.0.5:4242`` → ``10.0.0.5``, ``ipv6:[::1]:4242`` → ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest[1:rest.index("]")] if rest.startswith("[") else rest
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return kind  # unix sockets and the like


async def cancel_all(tasks: Sequence[asyncio.Task]) -> None:
    """Cancel a server's background tasks and wait until each has ended (whatever it raised)."""
    for t in tasks:
        t.cancel()
    if tasks:  # their errors are returned, not raised; a cancellation of the caller itself still is
        await asyncio.gather(*tasks, return_exceptions=True)


async def call_core(context: grpc.aio.ServicerContext, fn: Callable[..., Any], *args: Any, in_thread: bool = False) -> Any:
    """``fn(*args)`` for a servicer: any error aborts the call with the catalog's status and message.
    ``in_thread``: run it in a worker thread (a scheduler run takes seconds; the loop serves on)."""
    try:
        if in_thread:
            return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args))
        return fn(*args)
    except Exception as e:  # noqa: BLE001 — the catalog classifies
        code, message = to_status(e)
        await context.abort(code, message)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    health_server: grpc.aio.Server | None = None
    health_port: int = -1

    async def stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


async def start_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    host: str,
    port: int,
    cfg: TransportConfig,
    tls: Tls | None = None,
    allow_plaintext: bool = False,
    reflection_on: bool = True,
    health_port: int = -1,
) -> RunningServer:
    """A grpc.aio server with the services ``register`` adds, health and (``reflection_on``)
    reflection, behind the authorization policy (:mod:`ecd.transport.auth`); mutual TLS with
    ``tls``, else plaintext — refused beyond loopback unless ``allow_plaintext``. Returns the
    running server and its bound port; ``port=0`` picks a free port."""
    from ecd.transport.auth import Authorizer

    tls_.check_plaintext(tls, host, allow_plaintext, "host")
    server = grpc.aio.server(options=grpc_options(cfg), interceptors=[Authorizer(enforce=tls is not None)])
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_on:
        reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if port:
        _check_free(host, port)
    try:
        address = f"{host}:{port}"
        bound = server.add_secure_port(address, tls.server_credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError:  # grpc raises this for an address it cannot parse or bind
        bound = 0
    if bound == 0:
        raise ConfigError(f"port: cannot listen on {host}:{port} (in use, or not an address of this machine)")
    await server.start()
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, bound, health_servicer)
    if health_port >= 0:  # probes (Docker, Kubernetes) cannot present a client certificate
        running.health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, running.health_server)
        if health_port:
            _check_free(host, health_port)
        running.health_port = running.health_server.add_insecure_port(f"{host}:{health_port}")
        if running.health_port == 0:
            await server.stop(None)
            raise ConfigError(f"health_port: cannot listen on {host}:{health_port}")
        await running.health_server.start()
    return running


def wait_healthy(target: str, timeout_s: float = 30.0, service: str = "", tls: Tls | None = None,
                 server_role: str = "") -> None:
    """Block until ``target`` answers SERVING on the health service (no sleeps in callers); with
    ``tls``, over mutual TLS to a server holding a ``server_role`` certificate."""
    deadline = time.monotonic() + timeout_s
    with tls_.channel(target, tls, server_role) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{target} not SERVING within {timeout_s} s")
            try:
                watch = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=remaining)
                for reply in watch:
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        watch.cancel()
                        return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM / SIGINT set ``stop`` so the service shuts down gracefully."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class LoopThread:
    """An asyncio loop on a background thread: run grpc.aio services from synchronous code
    (tests, benchmarks) and drive them with coroutines."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ecd-services", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
