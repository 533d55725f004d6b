"""The device agent's options (flags, ``ECD_AGENT_*`` variables or a TOML file: ``ecd.config``), and
the two option values that need parsing: a walked trace and the sensor benchmark scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ecd.config import MiB, option
from ecd.errors import ConfigError
from ecd.packing import Packing
from ecd.types import Position


@dataclass(frozen=True)
class AgentConfig:
    cloud: str = option("127.0.0.1:50051", "cloud server host:port (registration, model download), or several replicas as "
                        "host:port,host:port (the first that answers is used, the next when it fails)")
    name: str = option("device", "a name operators see")
    profile: str = option("pi4", "device profile: shipped name or a file written by `ecd profile`")
    radio: str = option("wifi", "uplink radio: wifi, lte or 5g")
    w_privacy: float = option(0.5, "the privacy weight (paper 000's lambda2)", was=("privacy_weight",))
    w_energy: float = option(-1.0, "the energy weight (lambda1); -1 = 1 - w_privacy", was=("energy_weight",))
    min_split: int = option(0, "hard floor: never send anything from below this block")
    max_accuracy_loss: float = option(0.02, "the held-out accuracy a privacy defence may cost, as an absolute drop (0.02: two "
                                      "points below the undefended model's); a level or noise that costs more is not offered")
    split: int = option(-1, "run exactly this split instead of the utility's choice (-1 = the utility's); must be >= min_split")
    model: str = option("digits_cnn", "model id served by the cloud")
    encoding: str = option("float32", "tensor encoding on the uplink: float32, float16 or int8")
    source: str = option("heldout", "frames: heldout, synthetic or folder:PATH")
    frames: int = option(200, "how many frames to stream (0 = until SIGTERM: a long-running agent)")
    fps: float = option(0.0, "frames per second to send (0 = as fast as max_in_flight allows)")
    state: str = option("", "a file keeping this device's identity (id and token) across restarts, created 0600 (empty = a new device each run)")
    max_in_flight: int = option(8, "frames sent but not yet answered")
    linger_ms: float = option(2.0, "several frames per message: after a message's first frame, how long the agent may go on "
                              "taking the samples its in-flight window allows (their device blocks then run as one call) before "
                              "sending them together (it never waits for a sample that is not ready, so a lone frame goes at "
                              "once; while earlier frames are in flight it waits that long for room in the window, Nagle's "
                              "rule); 0 = one frame per message and per call, which an edge node of ecd.v1 revision 2 also takes")
    message_frames: int = option(16, "most frames in one message")
    message_bytes: int = option(4 * MiB, "most tensor bytes in one message (a larger frame goes alone); keep it under the edge "
                                "node's --max-tensor-bytes")
    model_dir: str = option("", "where fetched partitions are kept (default: a temporary folder)")
    metrics_port: int = option(-1, "Prometheus port (-1 = off, 0 = any free port)")
    metrics_host: str = option("127.0.0.1", "address the Prometheus endpoint listens on")
    metrics_tls: bool = option(False, "serve /metrics over TLS with this holder's certificate, only to scrapers presenting a "
                               "certificate of the same CA (needs tls_dir)")
    report: str = option("", "write the run's report as JSON to this file")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    call_timeout_s: float = option(10.0, "deadline of each call to the cloud (registration, assignment, location), seconds")
    drain_s: float = option(10.0, "on SIGTERM, how long to wait for the answers to frames in flight, seconds")
    position: str = option("", "where the device is, LAT,LON in degrees (placement uses it; empty = unknown)")
    trace: str = option("", "a CSV of positions (lat,lon per line) the device walks through, one step per --trace-every frames")
    trace_every: int = option(20, "frames between two location reports when replaying --trace")
    follow: bool = option(True, "watch the assignment and move to the edge node placement names")
    answer_deadline_s: float = option(5.0, "an edge node that answers none of the frames in flight for this long is treated "
                                      "as failed (a hung edge: its stream is abandoned, the frames go to the edge the cloud "
                                      "names next), seconds (0 = off)")
    register_retry_s: float = option(60.0, "how long to go on retrying a registration the cloud refuses for now (its rate "
                                     "limit, UNAVAILABLE), with backoff and jitter, before giving up, seconds (0 = no retry)")
    failover_wait_s: float = option(60.0, "how long to go on without any edge node answering (asking the cloud for a new one, with backoff) before giving up, seconds")
    sensor_seed: int = option(0, "seed of the simulated sensor whose readings answer campaign tasks")
    corrupt_reports: bool = option(False, "misbehave: send biased, noisy readings (to see CrowdPower catch it)")
    tls_dir: str = option("", "folder written by `ecd certs init`: ca.pem and this holder's NAME.pem/NAME.key (empty = plaintext, refused without --insecure)")
    tls_name: str = option("device-1", "which certificate in tls_dir is this holder's (NAME.pem, NAME.key)")
    insecure: bool = option(False, "plaintext on purpose: without tls_dir the service refuses to start unless this is set; anyone on "
                            "the network can then read and forge its traffic (a warning is logged where it listens beyond loopback)",
                            was=("allow_plaintext",))
    panel_port: int = option(-1, "the control panel's HTTP port: the user's energy/privacy curve and a privacy slider that re-splits the running device (-1 = off, 0 = any free port)")
    panel_host: str = option("127.0.0.1", "address the control panel listens on (loopback: only this device's user; another address needs --insecure, as the panel has no TLS)")
    adapt: bool = option(False, "re-split live from the measured link: among the splits within --adapt-slack of the least "
                         "estimated latency, the one of least ECD utility (never below min_split; not with --split)")
    adapt_slack: float = option(0.1, "with --adapt: how much slower than the fastest split (a fraction) a split may be estimated "
                                "and still be chosen for its utility")
    adapt_margin: float = option(0.1, "with --adapt: hysteresis; the current split is kept until it is this much (a fraction) "
                                 "worse than the slack allows, in latency or in utility")
    adapt_dwell_s: float = option(5.0, "with --adapt: the least time between two re-splits, seconds")
    probe_every_s: float = option(1.0, "with --adapt: how often to probe the edge node's round-trip time (a gRPC health "
                                  "check), seconds (0 = never: the RTT from frames only)")
    sensors: str = option("", "the phone's sensor benchmark scores for site selection, NAME=SCORE,... with scores 0..10 (e.g. temperature=7.5,camera=9)")


def packing(cfg: AgentConfig) -> Packing:
    """How the agent fills its messages (``ecd.packing``); ``--linger-ms 0`` sends one frame per message."""
    return Packing(cfg.linger_ms / 1e3, cfg.message_frames if cfg.linger_ms > 0 else 1, cfg.message_bytes).check()


def read_trace(path: str) -> list[Position]:
    """Positions from a CSV file: ``lat,lon`` per line (a header line and extra columns are ignored)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"--trace: cannot read {path} ({e.strerror})") from None
    out = []
    for n, line in enumerate(lines, 1):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or not cells[0]:
            continue
        try:
            lat, lon = float(cells[0]), float(cells[1])
        except ValueError:
            if n == 1:
                continue  # a header
            raise ConfigError(f"--trace: {path}, line {n}: expected lat,lon, got {line!r}") from None
        out.append(Position(lat, lon).check(f"--trace line {n}"))
    if not out:
        raise ConfigError(f"--trace: {path} holds no positions")
    return out


def parse_sensors(text: str) -> dict[str, float]:
    """``temperature=7.5,camera=9`` as a dict (the cloud checks names and ranges)."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, score = item.partition("=")
        try:
            out[name.strip()] = float(score)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--sensors: expected NAME=SCORE,..., got {item!r}")
    return out
