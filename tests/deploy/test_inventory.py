"""Every file under deploy/ is claimed by a check in tests/deploy (a new file without one fails
here), and the paths deploy/README.md names exist."""

from __future__ import annotations

import re
import subprocess
from fnmatch import fnmatch

from deploy_helpers import DEPLOY, REPO

# glob under deploy/ -> the test module that checks it with a real validator
CHECKED_BY = {
    "README.md": "test_inventory.py (the paths it names exist)",
    "compose.yaml": "test_compose.py",
    "docker/*.Dockerfile": "test_docker.py",
    "k8s/*.yaml": "test_k8s.py",
    "systemd/*.service": "test_systemd.py",
    "systemd/*.timer": "test_systemd.py",
    "systemd/ecd.sysusers": "test_systemd.py",
    "systemd/*.toml": "test_systemd.py",
    "systemd/*.env": "test_systemd.py",
    "prometheus/prometheus.yml": "test_prometheus_rules.py",
    "prometheus/rules/*.yml": "test_prometheus_rules.py",
    "prometheus/tests/*.yml": "test_prometheus_rules.py",
    "prometheus/devices/*.json": "test_prometheus_rules.py",
    "grafana/dashboard.py": "test_grafana.py",
    "grafana/dashboards/*.json": "test_grafana.py",
    "grafana/provisioning/*/*.yml": "test_grafana.py",
    "pi/pi-smoke.sh": "test_pi.py",
    "pi/smoke.py": "test_pi.py",
    "pi/cpuinfo-pi4": "test_pi.py",
    "testbed/links.toml": "test_testbed_links.py",
}


def deploy_files() -> list[str]:
    """The files under deploy/ git knows or would add (ignored files, such as caches, are not ours)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "deploy"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    files = [line.removeprefix("deploy/") for line in out.splitlines() if (REPO / line).is_file()]
    return files or [str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def unclaimed(files: list[str]) -> list[str]:
    return [f for f in files if not any(fnmatch(f, pattern) for pattern in CHECKED_BY)]


def test_every_deploy_file_is_checked() -> None:
    files = deploy_files()
    assert "compose.yaml" in files
    assert not unclaimed(files), f"no check claims {unclaimed(files)}: add one to tests/deploy and to CHECKED_BY"
    for pattern, module in CHECKED_BY.items():
        assert any(fnmatch(f, pattern) for f in files), f"{pattern}: no such file any more"
        assert (REPO / "tests" / "deploy" / module.split()[0]).is_file()


def test_inventory_fails_on_an_unchecked_file() -> None:
    assert unclaimed(deploy_files() + ["helm/values.yaml"]) == ["helm/values.yaml"]


def readme_paths(text: str) -> set[str]:
    """Paths in backticks that look like files of this repository (deploy/..., tests/..., k8s/... )."""
    found = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.rstrip(",.")
        if re.fullmatch(r"(deploy/|tests/|pi/|systemd/|docker/|k8s/|prometheus/|grafana/)[\w./*-]+", token) and "*" not in token:
            found.add(token)
    return found


def missing_readme_paths(text: str) -> list[str]:
    out = []
    for p in sorted(readme_paths(text)):
        candidates = [REPO / p, DEPLOY / p, REPO / "tests" / "deploy" / p]
        if not any(c.exists() for c in candidates):
            out.append(p)
    return out


def test_readme_names_real_files() -> None:
    text = (DEPLOY / "README.md").read_text()
    assert len(readme_paths(text)) >= 10
    assert not missing_readme_paths(text)
    assert "No Docker engine here" in text and "say nothing about a real Pi" in text


def test_readme_check_fails_on_a_broken_copy() -> None:
    text = (DEPLOY / "README.md").read_text().replace("`k8s/secrets.yaml`", "`k8s/secret.yaml`", 1)
    assert missing_readme_paths(text) == ["k8s/secret.yaml"]
