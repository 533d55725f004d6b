"""The operating page (docs/operating/metrics-and-alerts.md) names every metric the services register
and has a runbook section for every alert rule: a metric or an alert added without its line fails here."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from ecd.metrics import SchedulerMetrics, ServiceMetrics

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "operating" / "metrics-and-alerts.md"
ALERTS = REPO / "deploy" / "prometheus" / "rules" / "ecd-alerts.yml"


def exported_names() -> set[str]:
    """The ecd_* metric names as scraped (counters with their _total)."""
    scheduler = CollectorRegistry()
    SchedulerMetrics(scheduler)
    names = set()
    for registry in (ServiceMetrics("edge").registry, scheduler):
        for family in registry.collect():
            if family.name.startswith("ecd_"):
                names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_metric_is_on_the_page() -> None:
    names = exported_names()
    assert {"ecd_frames_total", "ecd_scheduler_leader", "ecd_registry_writable"} <= names
    text = PAGE.read_text()
    missing = sorted(n for n in names if f"| `{n}` |" not in text)
    assert not missing, f"metrics without a row in {PAGE.relative_to(REPO)}: {missing}"


def test_every_alert_has_a_runbook_section() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8
    headings = {line[4:].strip() for line in PAGE.read_text().splitlines() if line.startswith("### ")}
    missing = [a for a in alerts if a not in headings]
    assert not missing, f"alerts without a runbook section (### NAME) in {PAGE.relative_to(REPO)}: {missing}"
