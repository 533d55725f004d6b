"""Prometheus metrics, one registry per service instance (so tests can run several in a process).

Names follow the Prometheus conventions: base units, ``_seconds``, ``_bytes``, ``_total`` (added by
the client library to counters).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import PlatformCollector, ProcessCollector

from ecd.errors import ConfigError

# the statuses a refused frame is answered with (ecd.errors)
FRAME_STATUSES = ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "UNAUTHENTICATED", "NOT_FOUND", "UNAVAILABLE",
                  "RESOURCE_EXHAUSTED", "DATA_LOSS", "INTERNAL")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    def __init__(self, service: str):
        self.registry = CollectorRegistry()
        self.service = service
        ProcessCollector(registry=self.registry)  # CPU seconds, resident memory
        PlatformCollector(registry=self.registry)
        self.frames = Counter("ecd_frames", "Frames handled, by outcome", ["service", "outcome"], registry=self.registry)
        self.errors = Counter("ecd_frame_errors", "Frames refused, by gRPC status code", ["service", "code"], registry=self.registry)
        self.stage_seconds = Histogram(
            "ecd_stage_seconds", "Time spent per stage", ["service", "stage"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.hop_bytes = Counter("ecd_hop_bytes", "Bytes sent over each hop", ["service", "hop"], registry=self.registry)
        self.queue_depth = Gauge("ecd_queue_depth", "Frames waiting to be forwarded", ["service"], registry=self.registry)
        self.chosen_split = Gauge("ecd_chosen_split", "split.device: the device runs blocks [0, split.device)", ["service"], registry=self.registry)
        self.device_energy = Gauge(
            "ecd_estimated_device_energy_joules", "Estimated device energy per frame at the chosen split", ["service"], registry=self.registry
        )
        self.link_uplink_bps = Gauge("ecd_link_uplink_bits_per_second", "The uplink bandwidth the device measured from its "
                                     "own frames (device_agent.link)", ["service"], registry=self.registry)
        self.link_rtt = Gauge("ecd_link_rtt_seconds", "The round-trip time to the edge node the device measured (least of "
                              "the last 10 s)", ["service"], registry=self.registry)
        self.privacy = Gauge(
            "ecd_privacy_leakage", "Privacy leakage the split decision uses at the chosen split: the measured attack's "
            "similarity above what the task's answer alone reveals (0 = nothing beyond the label, 1 = the input)", ["service"],
            registry=self.registry
        )
        # every series exists from the start at 0, so increase() sees a service's first refusal too
        for outcome in ("ok", "error"):
            self.frames.labels(service, outcome)
        for code in FRAME_STATUSES:
            self.errors.labels(service, code)

    def frame(self, ok: bool, code_name: str | None = None) -> None:
        self.frames.labels(self.service, "ok" if ok else "error").inc()
        if not ok:
            self.errors.labels(self.service, code_name or "UNKNOWN").inc()


SCHEDULER_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SchedulerMetrics:
    """The cloud's schedulers: runs and their seconds, the applied placement's cost, the devices per edge."""

    def __init__(self, registry: CollectorRegistry):
        self.runs = Counter("ecd_scheduler_runs", "Scheduler runs, by scheduler, method and outcome",
                            ["scheduler", "method", "outcome"], registry=registry)
        self.seconds = Histogram("ecd_scheduler_seconds", "Time one scheduler run took", ["scheduler"],
                                 buckets=SCHEDULER_BUCKETS, registry=registry)
        self.placement_cost = Gauge("ecd_placement_cost", "The applied placement's cost, by part (activation, service, total)",
                                    ["part"], registry=registry)
        self.devices_per_edge = Gauge("ecd_devices_per_edge", "Live devices assigned to each edge node (set at every "
                                      "registration, move and placement)",
                                      ["edge_id"], registry=registry)
        self.registry_writable = Gauge("ecd_registry_writable", "1 while the cloud's registry takes writes, 0 while its disk "
                                       "is full (reads, frames and heartbeats go on)", registry=registry)
        self.leader = Gauge("ecd_scheduler_leader", "1 on the cloud replica that runs the schedulers (holds the registry's "
                            "scheduler lease), 0 on the others", registry=registry)
        self.active_edges = Gauge("ecd_placement_active_edges", "Edge nodes the applied placement keeps active", registry=registry)
        self.reputation = Gauge("ecd_device_reputation", "A device's reputation after its last scored campaign (CrowdPower)",
                                ["device_id"], registry=registry)

    def run(self, scheduler: str, method: str, outcome: str, seconds: float) -> None:
        self.runs.labels(scheduler, method, outcome).inc()
        self.seconds.labels(scheduler).observe(seconds)

    def reputations(self, qualities) -> None:
        """Publish the reputations a finished campaign wrote (:class:`~ecd.types.DeviceQuality`)."""
        for q in qualities:
            self.reputation.labels(q.device_id).set(q.reputation)

    def placed(self, report) -> None:
        """Publish an applied :class:`~ecd.scheduler_types.PlacementReport`."""
        for part, value in (("activation", report.activation_cost), ("service", report.service_cost), ("total", report.total_cost)):
            self.placement_cost.labels(part).set(value)
        self.active_edges.set(sum(e.active for e in report.edges))

    def devices_on_edges(self, counts: dict[str, int], edge_ids: list[str]) -> None:
        """Publish how many live devices each edge node has now (0 for an edge with none)."""
        self.devices_per_edge.clear()
        for edge_id in sorted(set(edge_ids) | set(counts)):
            self.devices_per_edge.labels(edge_id).set(counts.get(edge_id, 0))


def metrics_tls(cfg) -> tuple[str, str]:
    """(tls_dir, tls_name) for :func:`start_metrics` from a tier's config: empty unless ``metrics_tls``,
    which needs ``tls_dir``."""
    if not cfg.metrics_tls:
        return "", ""
    if not cfg.tls_dir:
        raise ConfigError("metrics_tls: needs tls_dir (the holder's certificate serves /metrics)")
    return cfg.tls_dir, cfg.tls_name


def start_metrics(registry: CollectorRegistry, host: str, port: int, tls_dir: str = "", tls_name: str = "") -> int:
    """Serve ``registry`` for Prometheus on ``host:port`` (0 = any free port); returns the port.
    With ``tls_dir``: over TLS with holder ``tls_name``'s certificate, to scrapers presenting a
    certificate of the same CA (Prometheus: ``tls_config`` with ``ca_file``, ``cert_file``,
    ``key_file``) — the figures name every device and its position's edge."""
    tls: dict = {}
    if tls_dir:
        folder = Path(tls_dir)
        tls = dict(certfile=str(folder / f"{tls_name}.pem"), keyfile=str(folder / f"{tls_name}.key"),
                   client_cafile=str(folder / "ca.pem"), client_auth_required=True)
    try:
        httpd, _ = start_http_server(port, addr=host, registry=registry, **tls)
    except OSError as e:
        raise ConfigError(f"metrics_port: cannot listen on {host}:{port} ({e.strerror or e})") from None
    except ssl.SSLError as e:
        raise ConfigError(f"metrics_tls: cannot use the certificate {tls_name!r} in {tls_dir} ({e})") from None
    return int(httpd.server_port)
