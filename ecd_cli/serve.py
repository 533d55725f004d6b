"""``ecd cloud-server``, ``ecd edge-node``, ``ecd device-agent``: run one tier.

Each resolves its config dataclass from flags, ``ECD_<SERVICE>_<OPTION>`` and ``--config``, starts
the service, prints one READY line (JSON with the bound ports) and serves until SIGTERM.

Secure by default (as Flower's SuperLink): a tier without ``tls_dir`` refuses to start unless
``--insecure`` (or ``insecure = true`` in its config file) says plaintext is meant; the demo and
the tests say so explicitly or bring certificates. The library's services keep serving plaintext on
loopback without it (in-process tests, ``ecd.transport.tls``): the refusal is the command's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os

from ecd.config import add_arguments, resolve
from ecd_cli.exits import CHECK_FAILED
from ecd_cli.stalls import stop_saying_what_stalls
from ecd.errors import ConfigError, UnavailableError

log = logging.getLogger("ecd")


def check_transport(cfg, service: str) -> None:
    """Refuse a tier that would speak plaintext by default (exit 78, one line); with ``--insecure``,
    warn once if anything it serves in plaintext listens beyond loopback (its gRPC port without
    TLS, a panel: plain HTTP)."""
    from ecd.transport.tls import is_loopback

    if not cfg.tls_dir and not cfg.insecure:
        raise ConfigError(f"{service}: no --tls-dir, and plaintext is not the default: create certificates with "
                          "`ecd certs init DIR` (then --tls-dir DIR), or run plaintext on purpose with --insecure")
    plain = [cfg.host] if not cfg.tls_dir and hasattr(cfg, "host") else []
    plain += [cfg.panel_host] if getattr(cfg, "panel_port", -1) >= 0 else []
    beyond = sorted({h for h in plain if not is_loopback(h)})
    if cfg.insecure and beyond:
        log.warning("[%s] --insecure: plaintext listening on %s, beyond loopback: anyone on that network can read and forge "
                    "this traffic", service, ", ".join(beyond))


async def _serve(start, service: str, grace_s: float) -> None:
    """Start a service, print one READY line (JSON, with the bound ports), serve until SIGTERM."""
    from ecd.transport.rpc import install_signal_handlers

    stop = asyncio.Event()
    install_signal_handlers(stop)
    log.info("[%s] starting (pid %d)", service, os.getpid())
    starting, stopped = asyncio.ensure_future(start), asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # SIGTERM while starting (an edge waiting for its cloud): end now
        log.info("[%s] SIGTERM while starting: stopping", service)
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        return
    stopped.cancel()
    running = starting.result()
    ready = {"ready": service, "port": running.port, "metrics_port": running.metrics_port,
             "health_port": running.server.health_port}
    if hasattr(running, "edge_id"):
        ready["edge_id"] = running.edge_id
    if hasattr(running, "panel_port"):  # the cloud's operator view (-1 = off)
        ready["panel_port"] = running.panel_port
    print(json.dumps(ready), flush=True)
    await stop.wait()
    log.info("[%s] SIGTERM: stopping (grace %.1f s)", service, grace_s)
    await stop_saying_what_stalls(running.stop(grace_s), service, grace_s)
    log.info("[%s] stopped", service)


def cmd_cloud_server(args: argparse.Namespace) -> int:
    from cloud_server.config import CloudConfig
    from cloud_server.service import start_cloud

    cfg = resolve(CloudConfig, args, "ECD_CLOUD_")
    check_transport(cfg, "cloud-server")
    asyncio.run(_serve(start_cloud(cfg), "cloud-server", cfg.grace_s))
    return 0


def cmd_edge_node(args: argparse.Namespace) -> int:
    from edge_node.service import EdgeConfig, start_edge

    cfg = resolve(EdgeConfig, args, "ECD_EDGE_")
    check_transport(cfg, "edge-node")
    try:
        asyncio.run(_serve(start_edge(cfg), "edge-node", cfg.grace_s))
    except ConnectionError as e:  # no cloud answers: an outage, which a supervisor's restart may outlast (exit 69)
        raise UnavailableError(str(e)) from None
    return 0


def cmd_device_agent(args: argparse.Namespace) -> int:
    from device_agent.agent import AgentConfig, run_agent

    cfg = resolve(AgentConfig, args, "ECD_AGENT_")
    check_transport(cfg, "device-agent")
    report = run_agent(cfg, on_ready=lambda ready: print(json.dumps(ready), flush=True))
    print(json.dumps(report.to_dict()))
    return 0 if report.errors == 0 else CHECK_FAILED


def register(sub: argparse._SubParsersAction) -> None:
    from cloud_server.config import CloudConfig
    from device_agent.agent import AgentConfig
    from edge_node.service import EdgeConfig

    p = sub.add_parser("cloud-server", help="run the cloud server (env: ECD_CLOUD_<OPTION>)")
    add_arguments(p, CloudConfig)
    p.set_defaults(func=cmd_cloud_server)
    p = sub.add_parser("edge-node", help="run an edge node (env: ECD_EDGE_<OPTION>)")
    add_arguments(p, EdgeConfig)
    p.set_defaults(func=cmd_edge_node)
    p = sub.add_parser("device-agent", help="run a device agent: register, stream frames, report (env: ECD_AGENT_<OPTION>)")
    add_arguments(p, AgentConfig)
    p.set_defaults(func=cmd_device_agent)
