"""deploy/prometheus: ``promtool check config`` and ``check rules`` accept the configuration and the
rules, ``promtool test rules`` runs the rules' unit tests, the file-discovery targets match the
Prometheus file_sd format, and each check fails on a deliberately broken copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, broken_copy, fails, ok, run, tool

PROM = DEPLOY / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
UNIT_TESTS = sorted((PROM / "tests").glob("*.yml"))
SCHEMAS = Path(__file__).resolve().parent / "schemas"
HOW = "Debian package prometheus"


def promtool(*args: str, cwd: Path | None = None):
    return run([tool("promtool", HOW), *args], cwd=cwd)


def copy_tree(tmp: Path) -> Path:
    """A private copy of deploy/prometheus (its files refer to each other by relative paths)."""
    dst = tmp / "prometheus"
    shutil.copytree(PROM, dst)
    return dst


def test_config_is_valid_and_loads_the_rules() -> None:
    proc = promtool("check", "config", str(PROM / "prometheus.yml"))
    ok(proc)
    assert f"SUCCESS: {len(RULES)} rule files found" in proc.stdout + proc.stderr


def test_config_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    d = copy_tree(tmp_path)
    bad = broken_copy(PROM / "prometheus.yml", d, "scrape_interval: 15s", "scrape_interval: fifteen")
    fails(promtool("check", "config", str(bad)), "fifteen")
    bad = broken_copy(PROM / "prometheus.yml", d, "file_sd_configs:", "file_sd_config:")
    fails(promtool("check", "config", str(bad)), "file_sd_config")


def test_rules_are_valid() -> None:
    ok(promtool("check", "rules", *map(str, RULES)))


def test_rules_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    bad = broken_copy(PROM / "rules" / "ecd-alerts.yml", tmp_path, 'expr: up{job="edge"} == 0', 'expr: up{job="edge"} === 0')
    fails(promtool("check", "rules", str(bad)), "parse error")
    bad = broken_copy(PROM / "rules" / "ecd-recording.yml", tmp_path, "record: ecd:frames:rate1m", "record: ecd frames rate")
    fails(promtool("check", "rules", str(bad)), "invalid recording rule name")


def test_rule_unit_tests_pass() -> None:
    assert UNIT_TESTS
    for t in UNIT_TESTS:
        proc = promtool("test", "rules", t.name, cwd=t.parent)
        ok(proc)
        assert "SUCCESS" in proc.stdout + proc.stderr


@pytest.mark.parametrize("rules,old,new", [
    # the threshold moves: the edge's 9 % error share no longer fires
    ("ecd-alerts.yml", 'ecd:frame_errors:ratio_rate5m{service=~"edge|cloud"} > 0.05', 'ecd:frame_errors:ratio_rate5m{service=~"edge|cloud"} > 0.5'),
    # the floor alert loses its new-series branch: the cloud's first refusal goes unseen
    ("ecd-alerts.yml", '\n            or\n', '\n            and\n'),
    # the p95 becomes a p50
    ("ecd-recording.yml", "histogram_quantile(0.95,", "histogram_quantile(0.5,"),
])
def test_rule_unit_tests_fail_on_broken_rules(tmp_path: Path, rules: str, old: str, new: str) -> None:
    d = copy_tree(tmp_path)
    broken_copy(PROM / "rules" / rules, d / "rules", old, new)
    fails(promtool("test", "rules", UNIT_TESTS[0].name, cwd=d / "tests"), "FAILED")


def test_every_alert_has_a_unit_test() -> None:
    import yaml

    alerts = {r["alert"] for f in RULES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {case["alertname"] for t in UNIT_TESTS for test in yaml.safe_load(t.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts == tested, f"alerts without a firing test: {alerts - tested}"
    assert {"EcdEdgeNodeDown", "EcdFrameErrorRateHigh", "EcdStageLatencyHigh", "EcdEdgeQueueSaturated",
            "EcdFrameRefusedBelowFloor", "EcdSchedulerFailing"} <= alerts
    text = (PROM / "rules" / "ecd-alerts.yml").read_text()
    assert 'ecd_scheduler_runs_total{outcome="error"}' in text
    assert "exported once the schedulers run in the cloud" in text.lower()


def file_sd_check(path: Path):
    return run([tool("check-jsonschema", "PyPI check-jsonschema, in the dev extra"),
                "--schemafile", str(SCHEMAS / "prometheus-file-sd.schema.json"), str(path)])


def test_device_targets_match_the_file_sd_format() -> None:
    files = sorted((PROM / "devices").glob("*.json"))
    assert files
    for f in files:
        ok(file_sd_check(f))


def test_file_sd_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    bad = broken_copy(PROM / "devices" / "compose.json", tmp_path, '"targets": ["localhost:9201"]', '"targets": "localhost:9201"')
    fails(file_sd_check(bad), "is not of type 'array'")
    bad = broken_copy(PROM / "devices" / "compose.json", tmp_path, '"device": "pi4-wifi"', '"device-name": "pi4-wifi"')
    fails(file_sd_check(bad), "device-name")
