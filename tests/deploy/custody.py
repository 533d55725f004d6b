"""How ``test_key_custody.py`` reads what every tier in deploy/ is given to read: each ECD service of
compose.yaml, each ECD container of deploy/k8s, each systemd unit, as a :class:`Tier` (its role,
the holder name it presents, the TLS files it can read and where they come from), and what is wrong
with that: the CA's key anywhere, another holder's key, an identity of another role, one edge or
device identity shared by several tiers, a Secret holding more than one holder's key.

A holder's role is its name's first word, as ``ecd certs init`` names them (cloud, edge-N, device-N).
A file is what its *source* is (the file a Compose secret or a systemd credential reads, a key of a
Kubernetes Secret), not the name it is mounted under: ca.key mounted as edge-1.key is still ca.key.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deploy_helpers import config_class, resolve_config
from k8s_checks import (
    DOCKERFILES,
    effective_config,
    image_env,
    pod_specs,
    secret_or_configmap_values,
)

ROLES = {"cloud-server": "cloud", "edge-node": "edge", "device-agent": "device"}
PREFIXES = {"cloud": "ECD_CLOUD_", "edge": "ECD_EDGE_", "device": "ECD_AGENT_"}
FOLDER = "the whole folder"  # a file name standing for "every file in the certificates' folder, ca.key included"


@dataclass
class Tier:
    where: str
    role: str
    tls_name: str
    files: dict[str, str] = field(default_factory=dict)  # file it can read -> where it comes from
    copies: int = 1  # pods (or nodes) running this one identity


def holder_role(name: str) -> str:
    return name.split("-", 1)[0]


def problems(tiers: list[Tier], shared_ok: tuple[str, ...] = ("cloud",)) -> list[str]:
    found = []
    for t in tiers:
        own = {"ca.pem", f"{t.tls_name}.pem", f"{t.tls_name}.key"}
        for f, src in sorted(t.files.items()):
            if f == FOLDER:
                found.append(f"{t.where}: mounts {src}, every file in it: ca.key and every holder's key")
            elif f == "ca.key":
                found.append(f"{t.where}: gets ca.key ({src}): the CA's key never leaves the operator's machine")
            elif f.endswith(".key") and f not in own:
                found.append(f"{t.where}: gets {f} ({src}), another holder's key (it is {t.tls_name})")
        if holder_role(t.tls_name) != t.role:
            found.append(f"{t.where}: the {t.role} tier presents {t.tls_name}, a {holder_role(t.tls_name)}'s identity")
        if FOLDER not in t.files and own - set(t.files):
            found.append(f"{t.where}: lacks {', '.join(sorted(own - set(t.files)))}: it cannot start with mutual TLS")
        if t.copies > 1 and t.role not in shared_ok:
            found.append(f"{t.where}: {t.copies} pods share {t.tls_name}'s key: one identity per {t.role}")
    for name, n in Counter(t.tls_name for t in tiers if t.role not in shared_ok).items():
        if n > 1:
            found.append(f"{n} tiers present {name}: one identity per edge node and per device")
    return found


def secret_problems(objs: list[dict]) -> list[str]:
    """Kubernetes: one holder per Secret, and no Secret holds ca.key."""
    found = []
    for (kind, name), values in secret_or_configmap_values(objs).items():
        keys = sorted(k for k in values if k.endswith(".key"))
        if kind == "Secret" and ("ca.key" in keys or len(keys) > 1):
            found.append(f"Secret {name} holds {', '.join(keys)}: one holder's key per Secret, never ca.key")
    return found


def _cmd(image: str) -> list[str]:
    dockerfile = DOCKERFILES.get(image.rsplit("/", 1)[-1].split(":")[0])
    found = re.findall(r"(?m)^CMD\s+(\[.*\])", dockerfile.read_text()) if dockerfile else []
    return json.loads(found[-1]) if found else []


def k8s_tiers(objs: list[dict]) -> list[Tier]:
    values = secret_or_configmap_values(objs)
    workloads = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "CronJob")}
    tiers = []
    for name, _, spec, _ in pod_specs(objs):
        o = workloads[name]
        copies = 2 if o["kind"] == "DaemonSet" else o["spec"].get("replicas", 1)  # a DaemonSet: one pod per node
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            role = ROLES.get((c.get("args") or _cmd(c["image"]) or [""])[0])
            if role is None:
                continue
            resolved = effective_config(objs, spec, c)
            tls_name = resolved[0].tls_name if resolved else config_class(PREFIXES[role]).tls_name
            t = Tier(f"k8s {name}/{c['name']}", role, tls_name, copies=copies)
            for m in c.get("volumeMounts", []):
                v = volumes.get(m["name"], {})
                sources = [v["secret"]] if "secret" in v else [s["secret"] for s in v.get("projected", {}).get("sources", []) if "secret" in s]
                for s in sources:
                    secret_name = s.get("secretName", s.get("name"))
                    items = s.get("items") or [{"key": k, "path": k} for k in values.get(("Secret", secret_name), {})]
                    for item in items:
                        t.files[item["key"]] = f"Secret {secret_name}"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"].endswith((".key", ".pem")):
                    t.files[ref["key"]] = f"Secret {ref['name']} as {e['name']}"
            tiers.append(t)
    return tiers


def compose_tiers(doc: dict, base: Path) -> list[Tier]:
    secrets = doc.get("secrets") or {}
    tiers = []
    for name, svc in doc["services"].items():
        role = ROLES.get((svc.get("command") or _cmd(svc.get("image", "")) or [""])[0])
        if role is None:
            continue
        prefix = PREFIXES[role]
        env = {**{k: v for k, v in image_env(svc.get("image", "")).items() if k.startswith(prefix)},
               **{k: str(v) for k, v in (svc.get("environment") or {}).items() if k.startswith(prefix)}}
        t = Tier(f"compose {name}", role, resolve_config(config_class(prefix), prefix, env=env).tls_name)
        for s in svc.get("secrets", []):
            source = s if isinstance(s, str) else s["source"]
            file = secrets.get(source, {}).get("file", source)
            t.files[posixpath.basename(file)] = f"secret {source} ({file})"
        for volume in svc.get("volumes", []):
            source = (volume if isinstance(volume, str) else volume.get("source", "")).split(":")[0]
            path = (base / source) if source.startswith((".", "/")) else None
            if path is not None and (source.rstrip("/").endswith("tls") or path.is_dir() and any(path.glob("*.key"))):
                t.files[FOLDER] = f"the folder {source}"
            elif path is not None and source.endswith((".key", ".pem")):
                t.files[posixpath.basename(source)] = f"bind mount {source}"
        tiers.append(t)
    return tiers


def systemd_tier(unit: Path, toml: Path) -> Tier:
    """A unit's credentials (LoadCredential=ID:PATH), its ECD_*_TLS_* (Environment=), else its TOML's."""
    import tomllib

    text = unit.read_text()
    role = ROLES[re.search(r"(?m)^ExecStart=\S+ (\S+)", text).group(1)]
    prefix = PREFIXES[role]
    env = dict(pair.split("=", 1) for line in re.findall(r"(?m)^Environment=(.*)$", text) for pair in line.split())
    options = tomllib.loads(toml.read_text())
    tls_name = env.get(f"{prefix}TLS_NAME", options.get("tls_name", config_class(prefix).tls_name))
    t = Tier(f"systemd {unit.name}", role, tls_name)
    for ident, path in re.findall(r"(?m)^LoadCredential(?:Encrypted)?=([^:\n]+):(\S+)", text):
        t.files[posixpath.basename(path)] = f"LoadCredential={ident}:{path}"
    tls_dir = env.get(f"{prefix}TLS_DIR", options.get("tls_dir", ""))
    if tls_dir != "%d":  # the folder the operator copied files into, not the unit's own credentials
        t.files[FOLDER] = f"tls_dir {tls_dir!r}, not %d (the credentials the unit loads)"
    for line in re.findall(r"(?m)^(?:Bind|BindReadOnly|ReadOnly|ReadWrite)Paths=(.*)$", text):
        if "/etc/ecd/tls" in line:
            t.files[FOLDER] = f"the folder /etc/ecd/tls ({line})"
    return t
