"""A real Prometheus server scrapes a real cloud server, edge node and device agent on loopback, with
deploy/prometheus's scrape jobs (devices through file discovery) and rules: what it stores equals
what the services count, for a known number of frames; the floor alert fires on a refused frame; and
every dashboard query evaluates."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from deploy_helpers import DEPLOY, tool
from prometheus_client.parser import text_string_to_metric_families

FRAMES = 40
POLL_S = 60  # every wait below is bounded by this, polling, never a fixed sleep


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def get(base: str, path: str, **params) -> dict:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def query(base: str, expr: str) -> list[dict]:
    reply = get(base, "/api/v1/query", query=expr)
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def poll(what: str, fn, timeout_s: float = POLL_S, every_s: float = 0.2):
    """``fn()`` until it returns something truthy; fails naming ``what`` after ``timeout_s``."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s} s (last: {last!r})")


def scrape_config(tmp: Path, cloud_port: int, edge_port: int, listen: str) -> Path:
    """deploy/prometheus/prometheus.yml with its targets pointed at these services, 1 s intervals."""
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(p) for p in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    jobs["prometheus"]["static_configs"] = [{"targets": [listen]}]
    jobs["cloud"]["static_configs"] = [{"targets": [f"127.0.0.1:{cloud_port}"]}]
    jobs["edge"]["static_configs"] = [{"targets": [f"127.0.0.1:{edge_port}"]}]
    jobs["device"]["scrape_interval"] = "1s"
    jobs["device"]["file_sd_configs"] = [{"files": [str(tmp / "devices" / "*.json")], "refresh_interval": "1s"}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def prometheus_server(tmp_path: Path):
    exe = tool("prometheus", "Debian package prometheus")
    listen = f"127.0.0.1:{free_port()}"
    (tmp_path / "devices").mkdir()

    def start(cloud_port: int, edge_port: int) -> str:
        config = scrape_config(tmp_path, cloud_port, edge_port, listen)
        log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 — closed below
        proc = subprocess.Popen([exe, f"--config.file={config}", f"--web.listen-address={listen}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", "--log.level=warn"], stdout=log, stderr=log)
        started.append((proc, log))
        base = f"http://{listen}"
        poll("Prometheus ready", lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=5).status == 200)
        return base

    started: list = []
    yield start
    for proc, log in started:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_prometheus_stores_what_the_services_count(tiers, prometheus_server, tmp_path: Path) -> None:
    import grpc
    from harness import frame_for

    from device_agent.agent import AgentConfig, DeviceAgent
    from device_agent.sources import open_source
    from ecd import codec, zoo
    from ecd.manifest import load_heldout
    from ecd.metrics import start_metrics
    from ecd.partition import Partition
    from ecd.transport import serde

    base = prometheus_server(tiers.cloud.metrics_port, tiers.edge.metrics_port)

    # A device agent, discovered through a file as on a deployment (deploy/prometheus/devices/).
    cfg = replace(AgentConfig(), cloud=tiers.cloud_target, name="live-device", split=2, frames=FRAMES,
                  model_dir=str(tmp_path / "agent"))
    agent = DeviceAgent(cfg)
    try:
        agent.connect()
        device_port = start_metrics(agent.metrics.registry, "127.0.0.1", 0)
        (tmp_path / "devices" / "live.json").write_text(json.dumps([{"targets": [f"127.0.0.1:{device_port}"], "labels": {"device": "live-device"}}]))
        report = agent.report(agent.run(open_source("heldout", cfg.model, agent.manifest.input, FRAMES)))
        assert report.frames == FRAMES and report.errors == 0

        # One frame from below another device's floor: the edge refuses it with FAILED_PRECONDITION.
        m = zoo.load_manifest("digits_cnn")
        x = m.input.preprocess(load_heldout(m).images[:1])
        a = tiers.register(split=2, min_split=2, name="floored")
        bad = frame_for(a, m, x, 1)
        bad.split_device = 1  # a valid split-1 activation: only the floor forbids it
        bad.tensor.CopyFrom(serde.tensor_to_pb(codec.encode(Partition(m, 0, 1).run(x))))
        (refused,) = list(tiers.edge_stub.Stream(iter([bad]), timeout=60))
        assert refused.HasField("error") and refused.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]

        # What each service counts now, read from its own endpoint...
        own = {"cloud": scrape(tiers.cloud.metrics_port), "edge": scrape(tiers.edge.metrics_port), "device": scrape(device_port)}
        counted = {job: {k: v for k, v in samples.items()
                         if k[0] in ("ecd_frames_total", "ecd_frame_errors_total", "ecd_hop_bytes_total", "ecd_stage_seconds_count")}
                   for job, samples in own.items()}
        assert counted["edge"][("ecd_frames_total", (("outcome", "ok"), ("service", "edge")))] == FRAMES
        assert counted["edge"][("ecd_frames_total", (("outcome", "error"), ("service", "edge")))] == 1
        assert counted["cloud"][("ecd_frames_total", (("outcome", "ok"), ("service", "cloud")))] == FRAMES
        assert counted["device"][("ecd_frames_total", (("outcome", "ok"), ("service", "device")))] == FRAMES

        # ...and what Prometheus stored, once a scrape after the last frame has landed.
        def stored() -> dict:
            out = {}
            for r in query(base, '{__name__=~"ecd_frames_total|ecd_frame_errors_total|ecd_hop_bytes_total|ecd_stage_seconds_count"}'):
                labels = dict(r["metric"])
                name, job = labels.pop("__name__"), labels.pop("job")
                labels.pop("instance")
                labels.pop("device", None)  # the file discovery's target label
                out.setdefault(job, {})[(name, tuple(sorted(labels.items())))] = float(r["value"][1])
            return out if out == counted else None

        poll("Prometheus holding the services' counts", stored)
        ok_frames = {r["metric"]["job"]: float(r["value"][1]) for r in query(base, 'ecd_frames_total{outcome="ok"}')}
        assert ok_frames == {"cloud": FRAMES, "edge": FRAMES, "device": FRAMES}
        floor = query(base, 'ecd_frame_errors_total{code="FAILED_PRECONDITION"}')
        # every service exports the series from the start (at 0), so increase() sees a first refusal
        assert sorted((r["metric"]["job"], float(r["value"][1])) for r in floor) == [("cloud", 0.0), ("device", 0.0), ("edge", 1.0)]
        device = query(base, 'ecd_chosen_split{job="device"}')
        assert [(r["metric"]["device"], float(r["value"][1])) for r in device] == [("live-device", 2.0)]

        print(f"\nPrometheus stored: ecd_frames_total{{outcome=ok}} {ok_frames}; "
              f"ecd_frame_errors_total{{code=FAILED_PRECONDITION}} {[(r['metric']['job'], r['value'][1]) for r in floor]}; "
              f"ecd_chosen_split{{job=device}} {[(r['metric']['device'], r['value'][1]) for r in device]}; "
              f"{sum(len(v) for v in counted.values())} counter samples equal to the services' own")
        def all_up():
            targets = get(base, "/api/v1/targets")["data"]["activeTargets"]
            return targets if all(t["health"] == "up" for t in targets) else None  # "unknown" until its first scrape

        targets = poll("every target up", all_up)
        assert {t["labels"]["job"] for t in targets} == {"prometheus", "cloud", "edge", "device"}

        # The floor alert (deploy/prometheus/rules/ecd-alerts.yml) fires on the refused frame.
        def floor_alert():
            alerts = get(base, "/api/v1/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "EcdFrameRefusedBelowFloor" and a["state"] == "firing"]

        (alert,) = poll("EcdFrameRefusedBelowFloor firing", floor_alert)
        assert alert["labels"]["service"] == "edge" and alert["labels"]["severity"] == "critical"
        rules = get(base, "/api/v1/rules")["data"]["groups"]
        assert all(r["health"] == "ok" for g in rules for r in g["rules"]), [(r["name"], r.get("lastError")) for g in rules for r in g["rules"]]

        # Every dashboard query evaluates on the live data.
        dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "ecd.json").read_text())
        for p in dashboard["panels"]:
            for t in p.get("targets", []):
                query(base, t["expr"].replace("$__rate_interval", "1m").replace("$device", ".*"))
        poll("a rate over the scraped frames", lambda: query(base, 'sum by (service) (rate(ecd_frames_total{outcome="ok"}[1m]))'))
    finally:
        agent.close()

