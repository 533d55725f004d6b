"""deploy/compose.yaml: valid against the Compose specification's schema (check-jsonschema's vendored
copy), and consistent: references name real services and files, every ECD_* variable is an option of
its service, and Prometheus's targets are the services' metrics ports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from deploy_helpers import DEPLOY, REPO, broken_copy, check_env, fails, ok, run, tool

COMPOSE = DEPLOY / "compose.yaml"
HOW = "PyPI check-jsonschema, in the dev extra"

# bind mounts the user creates before `docker compose up` (secrets are not committed), and how
USER_CREATED = {"./tls": "ecd certs init deploy/tls"}


def schema_check(path: Path):
    return run([tool("check-jsonschema", HOW), "--builtin-schema", "vendor.compose-spec", str(path)])


def test_compose_file_matches_the_compose_spec() -> None:
    ok(schema_check(COMPOSE))


@pytest.mark.parametrize("old,new,says", [
    ("condition: service_healthy", "condition: service_happy", "depends_on"),
    ("    image: ecd-cloud:dev", "    imag: ecd-cloud:dev", "imag"),
    ('network_mode: "service:prometheus"', 'network_mode: ["service:prometheus"]', "network_mode"),
])
def test_schema_check_fails_on_a_broken_copy(tmp_path: Path, old: str, new: str, says: str) -> None:
    fails(schema_check(broken_copy(COMPOSE, tmp_path, old, new)), says)


def load(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())


def semantic_problems(doc: dict, base: Path = DEPLOY) -> list[str]:
    """What the schema cannot see: dangling references, missing files, unknown ECD_* options."""
    problems = []
    services = doc["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            if dep not in services:
                problems.append(f"{name}: depends_on {dep}, no such service")
        mode = svc.get("network_mode", "")
        if mode.startswith("service:") and mode.split(":", 1)[1] not in services:
            problems.append(f"{name}: network_mode {mode}, no such service")
        build = svc.get("build")
        if build:
            context = (base / build["context"]).resolve()
            if not (context / build["dockerfile"]).is_file():
                problems.append(f"{name}: no Dockerfile {build['dockerfile']} in {context}")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source in USER_CREATED:
                continue
            if source.startswith((".", "/")) and not (base / source).exists():
                problems.append(f"{name}: mounts {source}, which does not exist")
            elif not source.startswith((".", "/")) and source not in (doc.get("volumes") or {}):
                problems.append(f"{name}: named volume {source} is not declared")
        try:
            check_env({k: v for k, v in (svc.get("environment") or {}).items() if k.startswith("ECD_")})
        except Exception as e:  # noqa: BLE001 — ConfigError or an AssertionError naming the variable
            problems.append(f"{name}: {e}")
    return problems


def test_folders_the_user_creates_are_explained_in_the_file() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for how in USER_CREATED.values():
        assert how in text


def test_compose_file_is_consistent() -> None:
    doc = load()
    assert not semantic_problems(doc)
    services = doc["services"]
    assert {"cloud", "prometheus", "grafana"} <= set(services)
    assert sum(svc.get("command") == ["edge-node"] for svc in services.values()) == 2
    assert sum(svc.get("command") == ["device-agent"] for svc in services.values()) >= 2


def test_consistency_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    for old, new, says in [
        ("ECD_EDGE_ADVERTISE: edge1:50061", "ECD_EDGE_ADVERTIZE: edge1:50061", "ECD_EDGE_ADVERTIZE"),
        ('ECD_AGENT_FRAMES: "2000"', 'ECD_AGENT_FRAMES: "many"', "frames"),
        ("- ./prometheus:/etc/prometheus:ro", "- ./prometheus-config:/etc/prometheus:ro", "prometheus-config"),
        ("    edge2:\n      condition: service_healthy", "    edge3:\n      condition: service_healthy", "edge3"),
    ]:
        bad = broken_copy(COMPOSE, tmp_path, old, new)
        problems = semantic_problems(load(bad))
        assert any(says in p for p in problems), (old, problems)


def test_prometheus_targets_are_the_services_metrics_ports() -> None:
    """deploy/prometheus/prometheus.yml scrapes what compose runs: the cloud image's metrics port,
    each edge's ECD_EDGE_METRICS_PORT, and (file discovery) each device agent's port and name."""
    doc = load()
    services = doc["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    cloud_port = next(line.split("=")[1].strip(" \\") for line in (DEPLOY / "docker" / "cloud.Dockerfile").read_text().splitlines()
                      if "ECD_CLOUD_METRICS_PORT=" in line)
    assert jobs["cloud"]["static_configs"][0]["targets"] == [f"cloud:{cloud_port}"]
    edges = {name: svc for name, svc in services.items() if svc.get("command") == ["edge-node"]}
    assert sorted(jobs["edge"]["static_configs"][0]["targets"]) == sorted(
        f"{name}:{svc['environment']['ECD_EDGE_METRICS_PORT']}" for name, svc in edges.items())
    devices = {svc["environment"]["ECD_AGENT_NAME"]: svc["environment"]["ECD_AGENT_METRICS_PORT"]
               for svc in services.values() if svc.get("command") == ["device-agent"]}
    discovered = {}
    for f in (DEPLOY / "prometheus" / "devices").glob("*.json"):
        for group in json.loads(f.read_text()):
            for target in group["targets"]:
                discovered[group["labels"]["device"]] = target.rsplit(":", 1)[1]
    assert discovered == devices
    # the agents share Prometheus's network namespace, so their targets are on localhost
    assert all(svc["network_mode"] == "service:prometheus" for svc in services.values() if svc.get("command") == ["device-agent"])
    # Grafana mounts the provisioning and the dashboards the tests check
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "./grafana/provisioning:" in grafana_mounts and "./grafana/dashboards:" in grafana_mounts
    assert (REPO / "deploy/grafana/dashboards/ecd.json").is_file()
