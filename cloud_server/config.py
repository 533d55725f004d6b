"""The cloud server's options (flags, ``ECD_CLOUD_*`` variables or a TOML file: ``ecd.config``).

Kept apart from the server so that reading them (``ecd``'s parser builds every command's flags)
imports neither the registry's SQLAlchemy nor the schedulers: a runtime-only install (a phone, a
Pi) has neither, and its ``ecd`` must still start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ecd.config import MiB, option
from ecd.errors import ConfigError


@dataclass(frozen=True)
class CloudConfig:
    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(0, "gRPC port (0 = any free port)", command=50051)
    metrics_port: int = option(0, "Prometheus port (0 = any free port, -1 = off)", command=9100)
    metrics_tls: bool = option(False, "serve /metrics over TLS with this holder's certificate, only to scrapers presenting a "
                               "certificate of the same CA (needs tls_dir)")
    db: str = option("ecd-cloud.sqlite3", "the registry (devices, edges, heads): a SQLite file, or postgresql://user@host:port/dbname shared by cloud replicas (cloud extra)")
    models: tuple = option(("digits_cnn",), "models to serve: zoo names or model folders")
    edge_boundary: int = option(-1, "blocks the edge runs up to by default (-1 = all but the last block)")
    max_tensor_bytes: int = option(16 * MiB, "largest tensor accepted in a frame, bytes (its float32 size counts)")
    max_batch: int = option(64, "most images one frame may carry")
    edge_timeout_s: float = option(3.0, "an edge node silent this long is dead: it gets no new devices and its devices move, seconds")
    device_lease_s: float = option(600.0, "a device not heard from this long is gone: placement and the per-edge counts leave it out until it calls again, seconds")
    workers: int = option(8, "frames of one edge stream processed concurrently (results stay in order)")
    batch_max_frames: int = option(32, "dynamic batching: most images run as one batch (frames of every edge stream needing the same blocks)")
    batch_max_delay_ms: float = option(0.0, "dynamic batching: how long a batch waits for more frames (0 = it runs at once; frames that arrive meanwhile form the next batch)")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    grace_s: float = option(5.0, "seconds in-flight calls get on SIGTERM")
    placement_method: str = option("otacs_ls", "placement method (paper 003): otacs_ls, otacs, ttacs, exact, lf, dis, random, ...")
    placement_activation_cost: float = option(5.0, "an edge node's default activation cost (AC_j), in km of device round trips")
    leader_lease_s: float = option(5.0, "cloud replicas on one PostgreSQL registry: the scheduler leader's lease; when the "
                                   "leader stops renewing it, another replica leads within this, seconds (> placement_check_s)")
    placement_check_s: float = option(1.0, "how often the cloud looks for edge nodes that joined or were lost, seconds")
    placement_debounce_s: float = option(5.0, "devices with a position that joined or left re-run placement at most this "
                                         "often (edge nodes joining or lost re-run it at once), seconds")
    tls_dir: str = option("", "folder written by `ecd certs init`: ca.pem and this holder's NAME.pem/NAME.key (empty = plaintext, refused without --insecure)")
    tls_name: str = option("cloud", "which certificate in tls_dir is this holder's (NAME.pem, NAME.key)")
    insecure: bool = option(False, "plaintext on purpose: without tls_dir the service refuses to start unless this is set; anyone on "
                            "the network can then read and forge its traffic (a warning is logged where it listens beyond loopback)",
                            was=("allow_plaintext",))
    reflection: bool = option(True, "serve gRPC server reflection (turn off in production)")
    health_port: int = option(-1, "a plaintext port on host serving only gRPC health, for probes that cannot present a client certificate (-1 = off, 0 = any free port)")
    devices_per_certificate: int = option(4, "live devices one device certificate may register (an agent restarted without "
                                          "--state registers anew; its old device counts until its lease runs out)")
    registrations_per_s: float = option(10.0, "device and edge registrations one caller may make per second (burst: five times as many)")
    locations_per_s: float = option(20.0, "location reports one device may send per second (burst: ten times as many, for a trace uploaded at once)")
    operator_peers: tuple = option(("127.0.0.1", "::1"), "addresses the operator's Scheduler calls are taken from (they "
                                   "show every device's position); 'any' = from everywhere")
    panel_port: int = option(-1, "operator view HTTP port: devices, edges, placement, campaigns (-1 = off, 0 = any free port)")
    panel_host: str = option("127.0.0.1", "address the operator view listens on (plain HTTP: beyond loopback only with "
                             "--insecure); it answers only operator_peers")
    panel_token_file: str = option("", "a file holding the operator token that unlocks the view's actions (revoking a "
                                   "device); empty = the view is read-only")
    enrol_code_ttl_s: float = option(600.0, "how long an enrolment code the operator view issues for a browser device "
                                     "stays good, seconds (each code enrols one device)")
    enrol_page_url: str = option("", "the device page's address that the operator view puts in an enrolment code's QR "
                                 "code, e.g. https://edge-1.example:8443/ (an edge node's --browser-port)")


def check_options(cfg: CloudConfig) -> None:
    """The options that can be wrong whatever their type, each refused with a ConfigError naming it
    (exit 78) before the cloud starts."""
    from cloud_server.placement import METHODS  # the schedulers: only once a cloud actually starts

    if cfg.placement_method not in METHODS:  # the one check of the configured method: the core trusts it
        raise ConfigError(f"placement_method: expected one of {', '.join(METHODS)}, got {cfg.placement_method!r}")
    if not cfg.placement_check_s > 0:
        raise ConfigError(f"placement_check_s: expected > 0 seconds, got {cfg.placement_check_s}")
    if not (math.isfinite(cfg.placement_debounce_s) and cfg.placement_debounce_s >= 0):
        raise ConfigError(f"placement_debounce_s: expected a finite number of seconds >= 0, got {cfg.placement_debounce_s}")
    if not cfg.leader_lease_s > cfg.placement_check_s:  # renewed at every check: it must outlast one
        raise ConfigError(f"leader_lease_s: expected more than placement_check_s ({cfg.placement_check_s:g} s), got {cfg.leader_lease_s}")
    if cfg.devices_per_certificate < 1:
        raise ConfigError(f"devices_per_certificate: expected at least 1, got {cfg.devices_per_certificate}")


def check_frame_limit(models: list, max_tensor_bytes: int) -> None:
    """Every split of every served model must fit a frame: ``max_tensor_bytes`` also caps what the
    cloud takes in at all (ecd.limits.frame_receive_cap), so a model whose one-image activation is
    larger could never be served."""
    for m in models:
        split = max(range(m.n_blocks + 1), key=m.activation_bytes)
        if m.activation_bytes(split) > max_tensor_bytes:
            raise ConfigError(f"max_tensor_bytes: {m.model_id} sends {m.activation_bytes(split)} bytes for one image at split "
                              f"{split}, more than {max_tensor_bytes}; raise max_tensor_bytes")
