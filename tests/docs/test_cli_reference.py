"""docs/reference/cli.md is what ``ecd``'s parser gives (tools/cli_reference.py writes it), and the
site's build warns, so fails strict, when it is not."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace


REPO = Path(__file__).resolve().parents[2]


def test_the_committed_page_is_the_generated_one(cli_reference) -> None:
    assert cli_reference.PAGE.read_text() == cli_reference.render(), \
        "docs/reference/cli.md is stale: run python tools/cli_reference.py"


def test_every_command_has_its_section(cli_reference) -> None:
    page = cli_reference.render()
    for command in ("ecd demo", "ecd models build", "ecd split", "ecd cloud-server", "ecd edge-node",
                    "ecd device-agent", "ecd certs init", "ecd schedule campaign create", "ecd placement solve"):
        assert f"`{command}`" in page, command
    assert "--w-privacy" in page and "--tls-dir" in page


def test_a_stale_page_is_a_warning_of_the_build(cli_reference, tmp_path, monkeypatch, caplog) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(cli_reference.render().replace("--w-privacy", "--w-priv", 1))
    monkeypatch.setattr(cli_reference, "PAGE", stale)
    page = SimpleNamespace(file=SimpleNamespace(src_uri="reference/cli.md"))
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        assert cli_reference.on_page_markdown("text", page, None, None) == "text"
    assert "python tools/cli_reference.py" in caplog.text
    caplog.clear()
    stale.write_text(cli_reference.render())
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        cli_reference.on_page_markdown("text", page, None, None)
    assert caplog.text == ""


def test_check_exits_1_on_a_stale_page(cli_reference, tmp_path, monkeypatch) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(cli_reference, "PAGE", stale)
    monkeypatch.setattr(cli_reference, "REPO", tmp_path)
    assert cli_reference.main(["--check"]) == 1
    assert cli_reference.main([]) == 0 and cli_reference.main(["--check"]) == 0
