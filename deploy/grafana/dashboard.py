"""The ECD Grafana dashboard as code: ``python deploy/grafana/dashboard.py`` writes
``deploy/grafana/dashboards/ecd.json`` (tests/deploy/test_grafana.py fails if the two drift apart).

Panels: throughput, refusals by status, latency per stage, bytes per hop, splits, privacy and energy
per device, devices per edge, the edge's queue, memory, scheduler runs, targets up. Every query
names a metric the services export (ecd/metrics.py; the test checks it); the datasource is the
provisioned Prometheus (uid ``prometheus``, deploy/grafana/provisioning/datasources/).
Made for Grafana 11.1 (dashboard schemaVersion 39), the version deploy/compose.yaml runs.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "ecd.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"


def _timeseries(title: str, exprs: list[tuple[str, str]], unit: str, description: str, **custom) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", **custom}},
            "overrides": [],
        },
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def _stat(title: str, expr: str, legend: str, unit: str, description: str) -> dict:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit, "decimals": 0}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "textMode": "value_and_name",
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
        },
        "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "instant": True}],
    }


def _row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


DEVICE = 'job="device", device=~"$device"'

LAYOUT: list[list[dict]] = [
    [_row("Throughput")],
    [
        _timeseries("Frames per second", [(f"sum by (service, outcome) (rate(ecd_frames_total[{RATE}]))", "{{service}} {{outcome}}")],
                    "reqps", "Frames each tier handled, by outcome (ok, error)."),
        _timeseries("Refusals by status code", [(f"sum by (service, code) (rate(ecd_frame_errors_total[{RATE}]))", "{{service}} {{code}}")],
                    "reqps", "Frames answered with an error, by gRPC status. FAILED_PRECONDITION at the edge or cloud: a frame below a device's floor (or a stale model version)."),
    ],
    [_row("Latency")],
    [
        _timeseries("p95 per stage", [(f"histogram_quantile(0.95, sum by (stage, le) (rate(ecd_stage_seconds_bucket[{RATE}])))", "{{stage}}")],
                    "s", "95th percentile of each stage: device_compute, edge_compute, cloud_compute, and end_to_end (capture to result, at the device)."),
        _timeseries("p50 per stage", [(f"histogram_quantile(0.5, sum by (stage, le) (rate(ecd_stage_seconds_bucket[{RATE}])))", "{{stage}}")],
                    "s", "Median of each stage."),
    ],
    [_row("Bytes")],
    [
        _timeseries("Bytes per second per hop", [(f"sum by (service, hop) (rate(ecd_hop_bytes_total[{RATE}]))", "{{hop}} (counted by {{service}})")],
                    "Bps", "device_to_edge and edge_to_cloud, as each side counts them."),
        _timeseries("Uplink bytes per frame, per device",
                    [((f'sum by (device) (rate(ecd_hop_bytes_total{{{DEVICE}, hop="device_to_edge"}}[{RATE}]))'
                       f" / sum by (device) (rate(ecd_frames_total{{{DEVICE}}}[{RATE}]))"), "{{device}}")],
                    "bytes", "What one frame costs on the device's radio: it falls as the split moves up or the encoding shrinks."),
    ],
    [_row("Devices")],
    [
        _timeseries("Split per device", [(f"ecd_chosen_split{{{DEVICE}}}", "{{device}}")], "none",
                    "split.device: the device runs blocks [0, split) and sends the activation after them.", drawStyle="line", lineInterpolation="stepAfter"),
        _timeseries("Privacy per device (leakage beyond the label)", [(f"ecd_privacy_leakage{{{DEVICE}}}", "{{device}}")], "percentunit",
                    "Measured similarity of a model-inversion reconstruction at the device's split (lower is more private)."),
        _timeseries("Estimated device energy per frame", [(f"ecd_estimated_device_energy_joules{{{DEVICE}}}", "{{device}}")], "joule",
                    "The split decision's estimate (compute + radio) at the chosen split."),
    ],
    [
        _stat("Devices per edge", 'max by (edge_id) (ecd_devices_per_edge{job="cloud"})', "{{edge_id}}", "none",
              "Live devices assigned to each edge node, set at every registration, move and placement (every cloud replica "
              "reads the same registry)."),
        _stat("Scheduler leader", 'ecd_scheduler_leader{job="cloud"}', "{{instance}}", "none",
              "1 on the cloud replica that runs the schedulers (holds the registry's scheduler lease); exactly one should."),
        _timeseries("Scheduler runs", [(f'sum by (scheduler, outcome) (increase(ecd_scheduler_runs_total{{job="cloud"}}[{RATE}]))', "{{scheduler}} {{outcome}}")],
                    "none", "Runs of the cloud's schedulers, by outcome."),
    ],
    [_row("Services")],
    [
        _timeseries("Edge queue to the cloud", [('ecd_queue_depth{job="edge"}', "{{instance}}")], "none",
                    "Frames waiting at each edge node for the cloud (max_queue, 64 by default, slows the devices)."),
        _timeseries("Resident memory", [('process_resident_memory_bytes{job=~"cloud|edge|device"}', "{{job}} {{instance}}")], "bytes",
                    "RSS of every service process."),
        _stat("Targets up", 'up{job=~"cloud|edge|device"}', "{{job}} {{instance}}", "none", "1 = Prometheus scrapes it."),
    ],
]


def build() -> dict:
    panels, y, next_id = [], 0, 1
    for row in LAYOUT:
        if row[0]["type"] == "row":
            panels.append({**row[0], "id": next_id, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
            next_id, y = next_id + 1, y + 1
            continue
        w = 24 // len(row)
        for i, panel in enumerate(row):
            panels.append({**panel, "id": next_id, "gridPos": {"h": 8, "w": w, "x": i * w, "y": y}})
            next_id += 1
        y += 8
    return {
        "uid": "ecd-overview",
        "title": "ECD Runtime",
        "description": "Split inference across devices, edge nodes and the cloud (deploy/grafana/dashboard.py)",
        "tags": ["ecd"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "device",
                    "label": "Device",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": 'label_values(ecd_chosen_split{job="device"}, device)', "refId": "device"},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "options": [],
                    "sort": 1,
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
