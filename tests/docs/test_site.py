"""The documentation site (issue 32): ``mkdocs build --strict`` succeeds, and fails on a broken link or
a page left out of the nav; the README stays short, its links resolve, and its two commands are the
ones CI runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def build(tmp_path: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` into tmp_path, from the repository root (snippets are read from there)."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", NO_COLOR="1")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
           "--config-file", str(config or REPO / "mkdocs.yml")]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_strict(tmp_path: Path) -> None:
    run = build(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    for page in ("index.html", "tutorials/quickstart/index.html", "reference/cli/index.html",
                 "reference/api/index.html", "how-to/deploy-compose/index.html", "explanation/security/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    # the deploy files are included where they lie, not copied: the page shows compose.yaml's text
    compose = (tmp_path / "site" / "how-to/deploy-compose/index.html").read_text()
    assert "network_mode" in compose and "--8&lt;--" not in compose


def _copy_of_the_site(tmp_path: Path) -> tuple[Path, Path]:
    """mkdocs.yml and docs/ copied under tmp_path (the hook and the snippets still read the checkout)."""
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["hooks"] = [str(REPO / h) for h in config["hooks"]]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, docs


BREAKAGES = {  # what is put into the copy: the name each must make the strict build warn about
    "[a page that is not](no-such-page.md)": "no-such-page.md",
    "[an anchor that is not](architecture.md#no-such-heading)": "no-such-heading",
    "new page": "orphan.md",
}


@pytest.mark.parametrize("broken", [False, True], ids=["the copy builds", "broken links and a page out of the nav"])
def test_the_strict_build_fails_on_a_broken_link_or_a_page_out_of_the_nav(tmp_path: Path, broken: bool) -> None:
    """One build of the copy as it is (what fails below is the breakage), one with every breakage:
    strict mode reports every warning before it aborts, and each breakage must have its own."""
    config, docs = _copy_of_the_site(tmp_path)
    if broken:
        for breakage in BREAKAGES:
            if breakage == "new page":
                (docs / "orphan.md").write_text("# Not in the nav\n")
            else:
                with (docs / "index.md").open("a") as f:
                    f.write(f"\n{breakage}\n")
    run = build(tmp_path, config)
    if not broken:
        assert run.returncode == 0, run.stdout + run.stderr
        return
    assert run.returncode != 0
    records: list[str] = []  # a log record: its level's line and the indented lines under it
    for line in (run.stdout + run.stderr).splitlines():
        if line[:1].isspace() and records:
            records[-1] += "\n" + line
        else:
            records.append(line)
    warnings = [r for r in records if r.startswith("WARNING")]
    for expected in BREAKAGES.values():
        assert any(expected in line for line in warnings), (expected, warnings)


def test_the_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines (issue 32: at most 150; the rest goes to docs/)"


def relative_links(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_every_relative_link_in_the_readme_resolves() -> None:
    links = relative_links(README.read_text())
    assert len(links) >= 10  # the links into docs/ and the picture
    missing = [t for t in links if not (REPO / t.partition("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_relative_links_are_found() -> None:
    text = "[a](docs/a.md) ![b](docs/b.png) [c](https://example.org) [d](#here) [e](docs/e.md#x)"
    assert relative_links(text) == ["docs/a.md", "docs/b.png", "docs/e.md#x"]


def test_the_readme_shows_the_two_commands_ci_runs() -> None:
    text = README.read_text()
    block = text.split("## The two commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    assert ci == commands
