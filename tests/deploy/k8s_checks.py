"""How ``test_k8s.py`` reads deploy/k8s and checks that its manifests fit together: the objects and their
pod specs, each container's options as its service resolves them (the --config TOML from its ConfigMap,
then ECD_* from the image's ENV and the manifest), every reference, selector and Secret key, and the
cloud's storage against its replica count; and the manifests with edits made, to show a check fails.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from deploy_helpers import DEPLOY, broken_copy, check_env, config_class, resolve_config

K8S = DEPLOY / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def objects(paths: list[Path] = MANIFESTS) -> list[dict]:
    return [d for p in paths for d in yaml.safe_load_all(p.read_text()) if d]


def pod_specs(objs: list[dict]) -> list[tuple[str, dict, dict, set[str]]]:
    """(name, pod template labels, pod spec, names of its volume claim templates) of every workload."""
    out = []
    for o in objs:
        spec = o.get("spec", {})
        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
            out.append((o["metadata"]["name"], spec["template"]["metadata"]["labels"], spec["template"]["spec"], claims))
        elif o["kind"] == "CronJob":
            t = spec["jobTemplate"]["spec"]["template"]
            out.append((o["metadata"]["name"], t["metadata"]["labels"], t["spec"], set()))
    return out


# The image a manifest names -> the Dockerfile that builds it: its ENV is in every container's environment.
DOCKERFILES = {"ecd-cloud": DEPLOY / "docker" / "cloud.Dockerfile", "ecd-runtime": DEPLOY / "docker" / "runtime.Dockerfile"}
PREFIXES = {"cloud-server.toml": "ECD_CLOUD_", "edge-node.toml": "ECD_EDGE_", "device-agent.toml": "ECD_AGENT_"}


def image_env(image: str) -> dict[str, str]:
    """The ENV of the Dockerfile that builds ``image`` (``{}`` for an image not built here)."""
    dockerfile = DOCKERFILES.get(image.rsplit("/", 1)[-1].split(":")[0])
    if dockerfile is None:
        return {}
    env: dict[str, str] = {}
    for line in re.sub(r"\\\n", " ", dockerfile.read_text()).splitlines():
        words = line.split(None, 1)
        if len(words) == 2 and words[0].upper() == "ENV":
            parts = shlex.split(words[1])
            if parts and "=" not in parts[0]:  # the legacy form: ENV KEY value with spaces
                env[parts[0]] = " ".join(parts[1:])
            else:
                env.update(part.split("=", 1) for part in parts)
    return env


def secret_or_configmap_values(objs: list[dict]) -> dict[tuple[str, str], dict[str, str]]:
    """(kind, name) -> its keys and values, for every Secret and ConfigMap."""
    out = {}
    for o in objs:
        if o["kind"] in ("Secret", "ConfigMap"):
            out[(o["kind"], o["metadata"]["name"])] = {**o.get("data", {}), **o.get("stringData", {})}
    return out


def effective_config(objs: list[dict], spec: dict, c: dict):
    """A container's options as its service resolves them: the --config TOML from its ConfigMap,
    overridden by ECD_* variables from the image's ENV and then from the manifest (a value from a
    Secret or ConfigMap key is looked up). (config, the TOML's keys and values, the ECD_* env), or
    None for a container without --config."""
    args = c.get("args", [])
    if "--config" not in args:
        return None
    path = args[args.index("--config") + 1]
    mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == path), None)
    volume = next((v for v in spec.get("volumes", []) if mount and v["name"] == mount["name"]), None)
    if volume is None or "configMap" not in volume or "subPath" not in mount:
        return None  # reported by problems()
    key = mount["subPath"]
    text = secret_or_configmap_values(objs).get(("ConfigMap", volume["configMap"]["name"]), {}).get(key)
    if text is None or key not in PREFIXES:
        return None
    prefix = PREFIXES[key]
    values = secret_or_configmap_values(objs)
    env = {k: v for k, v in image_env(c["image"]).items() if k.startswith(prefix)}
    for e in c.get("env", []):
        if not e["name"].startswith(prefix):
            continue
        ref = e.get("valueFrom", {})
        if "secretKeyRef" in ref or "configMapKeyRef" in ref:
            kind, r = ("Secret", ref["secretKeyRef"]) if "secretKeyRef" in ref else ("ConfigMap", ref["configMapKeyRef"])
            env[e["name"]] = values.get((kind, r["name"]), {}).get(r["key"], "")
        else:
            env[e["name"]] = e.get("value", "x").replace("$(NODE_IP)", "10.0.0.1")
    toml_file = Path(tempfile.mkdtemp()) / key
    toml_file.write_text(text)
    cfg = resolve_config(config_class(prefix), prefix, toml=toml_file, env=env)
    return cfg, tomllib.loads(text), env


def problems(objs: list[dict]) -> list[str]:
    found = []
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    values = secret_or_configmap_values(objs)
    configmaps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    for o in objs:
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != "ecd":
            found.append(f"{o['kind']}/{o['metadata']['name']}: not in namespace ecd")
        if o["kind"] == "StatefulSet" and ("Service", o["spec"]["serviceName"]) not in names:
            found.append(f"StatefulSet/{o['metadata']['name']}: serviceName {o['spec']['serviceName']} is no Service")
    workloads = pod_specs(objs)
    for name, _, spec, claims in workloads:
        for v in spec.get("volumes", []):
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in names:
                found.append(f"{name}: volume {v['name']} names ConfigMap {v['configMap']['name']}, not defined")
            if "secret" in v and ("Secret", v["secret"]["secretName"]) not in names:
                found.append(f"{name}: volume {v['name']} names Secret {v['secret']['secretName']}, not defined")
            if "persistentVolumeClaim" in v and ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) not in names:
                found.append(f"{name}: volume {v['name']} names a PersistentVolumeClaim that is not defined")
        for c in spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            missing = mounts - {v["name"] for v in spec.get("volumes", [])} - claims
            if missing:
                found.append(f"{name}: mounts {missing}, no such volume")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if field in ref and not ref[field].get("optional"):
                        r = ref[field]
                        if r["key"] not in values.get((kind, r["name"]), {}):
                            found.append(f"{name}: env {e['name']} names {kind} {r['name']} key {r['key']}, not defined")
            args = c.get("args", [])
            if "--config" in args:
                path = args[args.index("--config") + 1]
                mount = next((m for m in c["volumeMounts"] if m["mountPath"] == path), None)
                if mount is None:
                    found.append(f"{name}: --config {path} is not mounted")
            ctx = c.get("securityContext", {})
            if ctx.get("allowPrivilegeEscalation") is not False or ctx.get("capabilities", {}).get("drop") != ["ALL"]:
                found.append(f"{name}: container {c['name']} is not restricted")
            env = {e["name"]: e.get("value", "x") for e in c.get("env", []) if e["name"].startswith("ECD_")}
            try:
                check_env({k: v.replace("$(NODE_IP)", "10.0.0.1") for k, v in env.items()})
            except Exception as e:  # noqa: BLE001
                found.append(f"{name}: {e}")
            try:
                resolved = effective_config(objs, spec, c)
            except Exception as e:  # noqa: BLE001
                found.append(f"{name}: {e}")
                resolved = None
            if resolved:  # a TOML line that a variable silently overrides with another value is a trap
                cfg, toml, env = resolved
                for key, value in toml.items():
                    have = getattr(cfg, key)
                    want = tuple(value) if isinstance(have, tuple) else value
                    if have != want:
                        var = next((k for k in env if k.split("_", 2)[-1].lower() == key), "an ECD_* variable")
                        found.append(f"{name}: {key} = {value!r} in the --config file, but {var} (image or manifest) makes it {have!r}")
    for o in objs:
        if o["kind"] == "Service":
            sel = o["spec"]["selector"]
            pods = [(n, labels, spec) for n, labels, spec, _ in workloads if sel.items() <= labels.items()]
            if not pods:
                found.append(f"Service/{o['metadata']['name']}: selector {sel} matches no workload")
            ports = {p.get("name") for _, _, spec in pods for c in spec["containers"] for p in c.get("ports", [])}
            for p in o["spec"]["ports"]:
                if isinstance(p["targetPort"], str) and p["targetPort"] not in ports:
                    found.append(f"Service/{o['metadata']['name']}: targetPort {p['targetPort']} is no container port")
    for name, cm in configmaps.items():
        for key, text in cm["data"].items():
            if key.endswith(".toml"):
                prefix = PREFIXES[key]
                tmp = Path(tempfile.mkdtemp()) / key
                tmp.write_text(text)
                try:
                    resolve_config(config_class(prefix), prefix, toml=tmp)
                except Exception as e:  # noqa: BLE001
                    found.append(f"ConfigMap/{name} {key}: {e}")
    if ("Deployment", "ecd-cloud") in names:
        found += cloud_storage_problems(objs)
    return found


def cloud_storage_problems(objs: list[dict]) -> list[str]:
    """The cloud's storage and replica count agree. More than one replica needs the PostgreSQL
    registry (a SQLite file is one pod's: on an emptyDir each replica has its own registry, on a
    ReadWriteOnce volume the replicas cannot all mount it), and its host must be a Service here
    whose database takes the user, database name and password the cloud brings. One replica on
    SQLite needs the file on a PersistentVolumeClaim and strategy Recreate (never two pods on it)."""
    found = []
    deploy = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "ecd-cloud")
    replicas = deploy["spec"].get("replicas", 1)
    spec = deploy["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if "cloud-server" in c.get("args", []))
    try:
        resolved = effective_config(objs, spec, c)
    except Exception as e:  # noqa: BLE001 — reported by problems() too
        return [f"ecd-cloud: its options do not resolve: {e}"]
    if resolved is None:
        return ["ecd-cloud: no --config file from a ConfigMap"]
    db = resolved[0].db
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PersistentVolumeClaim"}
    mounted_claims = [claims.get(v["persistentVolumeClaim"]["claimName"]) for v in volumes.values() if "persistentVolumeClaim" in v]
    env = {e["name"]: e for e in c.get("env", [])}
    if not db.startswith(("postgresql://", "postgres://")):
        if replicas > 1:
            found.append(f"ecd-cloud: {replicas} replicas on the SQLite file {db}: each would open its own registry "
                         "(or a ReadWriteOnce volume they cannot all mount); more than one replica needs db = postgresql://...")
            return found
        path = posixpath.join(image_workdir(c["image"]), db)
        mount = max((m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")),
                    key=lambda m: len(m["mountPath"]), default=None)
        if mount is None or "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
            found.append(f"ecd-cloud: the SQLite file {path} is on no PersistentVolumeClaim: the registry dies with the pod")
        if deploy["spec"].get("strategy", {}).get("type") != "Recreate":
            found.append("ecd-cloud: a SQLite registry needs strategy Recreate: a rolling update runs two pods on one file")
        return found
    url = urlsplit(db)
    if url.password is not None or "password=" in url.query.lower():
        found.append("ecd-cloud: the db URL carries a password: a ConfigMap is no Secret (PGPASSWORD from a Secret)")
    host = url.hostname or ""
    service_name = host.removesuffix(".svc.cluster.local").removesuffix(".svc").removesuffix(".ecd")
    service = next((o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == service_name and "." not in service_name), None)
    if service is None:
        found.append(f"ecd-cloud: db host {host!r} names no Service in namespace ecd")
    else:
        port = url.port or 5432
        if port not in {p["port"] for p in service["spec"]["ports"]}:
            found.append(f"ecd-cloud: db port {port} is not a port of Service/{service_name}")
        sel = service["spec"]["selector"]
        backends = [spec for _, labels, spec, _ in pod_specs(objs) if sel.items() <= labels.items()]
        server_env = {e["name"]: e for s in backends for k in s["containers"] for e in k.get("env", [])}
        user, dbname = url.username or "", url.path.lstrip("/")
        if server_env.get("POSTGRES_USER", {}).get("value") != user:
            found.append(f"ecd-cloud: db user {user!r} is not the POSTGRES_USER of Service/{service_name}'s pods")
        if server_env.get("POSTGRES_DB", {}).get("value", server_env.get("POSTGRES_USER", {}).get("value")) != dbname:
            found.append(f"ecd-cloud: db name {dbname!r} is not the POSTGRES_DB of Service/{service_name}'s pods")
        theirs = server_env.get("POSTGRES_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
        ours = env.get("PGPASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
        if url.password is None and (ours is None or ours != theirs):
            found.append(f"ecd-cloud: PGPASSWORD does not come from the Secret key that sets Service/{service_name}'s "
                         f"POSTGRES_PASSWORD ({ours} vs {theirs})")
    if replicas > 1:
        for claim in mounted_claims:
            if claim and "ReadWriteOnce" in claim["spec"].get("accessModes", []):
                found.append(f"ecd-cloud: {replicas} replicas mount the ReadWriteOnce volume {claim['metadata']['name']}")
    return found


def image_workdir(image: str) -> str:
    dockerfile = DOCKERFILES.get(image.rsplit("/", 1)[-1].split(":")[0])
    dirs = re.findall(r"(?m)^WORKDIR\s+(\S+)", dockerfile.read_text()) if dockerfile else []
    return dirs[-1] if dirs else "/"


def broken_objects(tmp_path: Path, edits: dict[str, list[tuple[str, str]]]) -> list[dict]:
    """The manifests with each file's ``(old, new)`` replacements made (each ``old`` must occur)."""
    paths = []
    for p in MANIFESTS:
        for old, new in edits.get(p.name, []):
            p = broken_copy(p, tmp_path / f"{p.stem}-{len(list(tmp_path.glob('*')))}", old, new)
        paths.append(p)
    return objects(paths)
