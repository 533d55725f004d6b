"""deploy/k8s: every manifest validates offline against the Kubernetes schemas (kubernetes-validate,
strict: no unknown fields) for the k3s releases we name, and the manifests fit together: the
ConfigMaps' TOML files resolve with the services' own option parser, references name real objects,
selectors match, env variables from Secrets name real keys, no ECD_* variable (the image's ENV
included) silently overrides a TOML line, and the cloud's storage and replica count agree: more than
one replica only on the PostgreSQL registry, whose host is a Service here that takes the cloud's
user, database and password (PGPASSWORD from the Secret that set it)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from deploy_helpers import broken_copy, fails, ok, run, tool
from k8s_checks import K8S, MANIFESTS, broken_objects, cloud_storage_problems, effective_config, objects, pod_specs, problems

VERSIONS = ["1.30.0", "1.33.0"]  # k3s releases: the oldest still in wide use, and a recent one
HOW = "PyPI kubernetes-validate, in the dev extra"


def validate(paths: list[Path], version: str):
    proc = run([tool("kubernetes-validate", HOW), "--strict", "-k", version, *map(str, paths)])
    # A kind it has no schema for is only a warning there (exit 0): here it is a failure.
    if proc.returncode == 0 and "WARN" in proc.stdout + proc.stderr:
        proc.returncode = 1
    return proc


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    proc = validate(MANIFESTS, version)
    ok(proc)
    assert proc.stdout.count(" passed for resource ") == len(objects()), proc.stdout


@pytest.mark.parametrize("file,old,new,says", [
    ("cloud.yaml", "replicas: 2", 'replicas: "two"', "replicas"),
    ("cloud.yaml", "          imagePullPolicy: IfNotPresent", "          imagePulPolicy: IfNotPresent", "imagePulPolicy"),
    ("edge.yaml", "kind: Deployment", "kind: Deploymentt", "Deploymentt"),
    ("device-agents.yaml", "restartPolicy: OnFailure", "restartPolicy: [OnFailure]", "restartPolicy"),
    ("postgres.yaml", "  volumeClaimTemplates:", "  volumeClaimTemplate:", "volumeClaimTemplate"),
])
def test_validation_fails_on_a_broken_copy(tmp_path: Path, file: str, old: str, new: str, says: str) -> None:
    fails(validate([broken_copy(K8S / file, tmp_path, old, new)], VERSIONS[0]), says)


def test_manifests_fit_together() -> None:
    objs = objects()
    assert not problems(objs), problems(objs)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert {("Deployment", "ecd-cloud"), ("Service", "ecd-cloud"), ("StatefulSet", "ecd-postgres"), ("Service", "ecd-postgres"),
            ("Deployment", "ecd-edge-1"), ("Deployment", "ecd-edge-2"), ("CronJob", "ecd-device-agent-1"),
            ("CronJob", "ecd-device-agent-2"), ("Secret", "ecd-tls-cloud"), ("Secret", "ecd-postgres")} <= kinds


DB = "postgresql://ecd@ecd-postgres:5432/ecd"


@pytest.mark.parametrize("edits,says", [
    ({"edge.yaml": [("name: ecd-edge\n        - name: models", "name: ecd-edge-config\n        - name: models")]}, "ecd-edge-config"),
    ({"config.yaml": [("    max_queue = 64", "    max_queue = \"lots\"")]}, "max_queue"),
    ({"cloud.yaml": [("      targetPort: metrics\n", "      targetPort: prometheus\n")]}, "prometheus"),
    ({"edge.yaml": [("value: \"$(NODE_IP):30061\"", "value: \"$(NODE_IP):30061\"\n            - name: ECD_EDGE_ADVERTISE_HOST\n              value: x")]},
     "ADVERTISE_HOST"),
    # the image's ECD_CLOUD_DB (a SQLite file) silently beats the TOML's db when the manifest drops its own
    ({"cloud.yaml": [(f"            - name: ECD_CLOUD_DB\n              value: {DB}\n", "")]}, "ECD_CLOUD_DB"),
    ({"cloud.yaml": [("                  name: ecd-postgres\n                  key: password",
                      "                  name: ecd-postgres\n                  key: passwd")]}, "key passwd"),
    ({"postgres.yaml": [("  serviceName: ecd-postgres", "  serviceName: postgres")]}, "serviceName postgres"),
    ({"postgres.yaml": [("              mountPath: /var/lib/postgresql/data", "              mountPath: /var/lib/postgresql/data\n            - name: wal\n              mountPath: /wal")]},
     "{'wal'}"),
])
def test_fit_check_fails_on_broken_copies(tmp_path: Path, edits: dict, says: str) -> None:
    found = problems(broken_objects(tmp_path, edits))
    assert any(says in f for f in found), (edits, found)


def test_cloud_replicas_share_the_postgresql_registry() -> None:
    """Two replicas, rolling, on PostgreSQL: the db names the ecd-postgres Service, the password comes
    from the Secret that set it, and no volume is shared."""
    objs = objects()
    deploy = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "ecd-cloud")
    assert deploy["spec"]["replicas"] == 2 and deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    spec = deploy["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in spec.get("volumes", []))
    cfg, toml, _ = effective_config(objs, spec, spec["containers"][0])
    assert cfg.db == toml["db"] == DB
    assert not cloud_storage_problems(objs)
    assert {p for p in spec["containers"][0] if p.endswith("Probe")} == {"readinessProbe", "livenessProbe"}
    pg = next(o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "ecd-postgres")
    assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "local-path"
    ctx = pg["spec"]["template"]["spec"]["securityContext"]
    assert ctx["runAsUser"] == ctx["fsGroup"] == 999 and ctx["runAsNonRoot"] is True
    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", pg["spec"]["template"]["spec"]["containers"][0]["image"])


SQLITE = "/var/lib/ecd/cloud.sqlite3"


@pytest.mark.parametrize("edits,says", [
    # two replicas, both db settings back on a SQLite file
    ({"config.yaml": [(f'db = "{DB}"', f'db = "{SQLITE}"')], "cloud.yaml": [(f"value: {DB}", f"value: {SQLITE}")]},
     "2 replicas on the SQLite file"),
    ({"config.yaml": [(f'db = "{DB}"', 'db = "postgresql://ecd@ecd-pg:5432/ecd"')],
      "cloud.yaml": [(f"value: {DB}", "value: postgresql://ecd@ecd-pg:5432/ecd")]}, "'ecd-pg' names no Service"),
    ({"config.yaml": [(f'db = "{DB}"', 'db = "postgresql://ecd:hunter2@ecd-postgres:5432/ecd"')],
      "cloud.yaml": [(f"value: {DB}", "value: postgresql://ecd:hunter2@ecd-postgres:5432/ecd")]}, "carries a password"),
    ({"config.yaml": [(f'db = "{DB}"', 'db = "postgresql://ecd@ecd-postgres:5433/ecd"')],
      "cloud.yaml": [(f"value: {DB}", "value: postgresql://ecd@ecd-postgres:5433/ecd")]}, "db port 5433"),
    ({"postgres.yaml": [("            - name: POSTGRES_DB\n              value: ecd", "            - name: POSTGRES_DB\n              value: registry")]},
     "POSTGRES_DB"),
    ({"cloud.yaml": [("            - name: PGPASSWORD", "            - name: PGPASSFILE")]}, "PGPASSWORD"),
])
def test_storage_check_fails_on_broken_copies(tmp_path: Path, edits: dict, says: str) -> None:
    found = cloud_storage_problems(broken_objects(tmp_path, edits))
    assert any(says in f for f in found), (edits, found)


def test_storage_check_takes_one_replica_on_a_sqlite_volume_only_with_recreate() -> None:
    """The check is about agreement, not PostgreSQL only: the old layout (one replica, SQLite on a
    ReadWriteOnce claim, Recreate) passes; on an emptyDir, or rolling, it does not."""
    objs = copy.deepcopy(objects())
    deploy = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "ecd-cloud")
    deploy["spec"]["replicas"] = 1
    deploy["spec"]["strategy"] = {"type": "Recreate"}
    spec = deploy["spec"]["template"]["spec"]
    c = spec["containers"][0]
    next(e for e in c["env"] if e["name"] == "ECD_CLOUD_DB")["value"] = SQLITE
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "ecd-cloud")
    cm["data"]["cloud-server.toml"] = cm["data"]["cloud-server.toml"].replace(DB, SQLITE)
    assert any("on no PersistentVolumeClaim" in f for f in cloud_storage_problems(objs))  # /var/lib/ecd is an emptyDir
    state = next(v for v in spec["volumes"] if v["name"] == "state")
    del state["emptyDir"]
    state["persistentVolumeClaim"] = {"claimName": "ecd-cloud-data"}
    objs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ecd-cloud-data", "namespace": "ecd"},
                 "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert cloud_storage_problems(objs) == []
    deploy["spec"]["strategy"] = {"type": "RollingUpdate"}
    assert any("needs strategy Recreate" in f for f in cloud_storage_problems(objs))
    deploy["spec"]["strategy"] = {"type": "Recreate"}
    deploy["spec"]["replicas"] = 2
    assert any("2 replicas on the SQLite file" in f for f in cloud_storage_problems(objs))


def test_edges_and_devices_run_on_arm64_nodes() -> None:
    pis = [spec for name, _, spec, _ in pod_specs(objects()) if name.startswith(("ecd-edge-", "ecd-device-agent-"))]
    assert len(pis) == 4  # edge-1, edge-2, device-1, device-2: one workload per identity (test_key_custody.py)
    for spec in pis:
        assert spec["nodeSelector"]["kubernetes.io/arch"] == "arm64"
        assert any(t["key"] == "ecd.io/edge" for t in spec["tolerations"])


def test_each_device_comes_back_as_itself_from_a_claim_of_its_own() -> None:
    """A device's run keeps its identity (--state) and partitions on a PersistentVolumeClaim no other
    device mounts, and its config points --state there: an emptyDir made every run a new device."""
    objs = objects()
    claims = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    seen = set()
    for name, _, spec, _ in pod_specs(objs):
        if not name.startswith("ecd-device-agent-"):
            continue
        container = spec["containers"][0]
        state = next(v for v in spec["volumes"] if v["name"] == "state")
        claim = state.get("persistentVolumeClaim", {}).get("claimName")
        assert claim in claims and claim not in seen, (name, state)
        seen.add(claim)
        cfg, _, _ = effective_config(objs, spec, container)
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "state")
        assert cfg.state.startswith(mount + "/"), (name, cfg.state)
    assert len(seen) == 2
