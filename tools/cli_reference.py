"""The ``ecd`` command's reference page, docs/reference/cli.md, generated from its argparse parser.

The page is committed so that it reads on GitHub too; one writer, this module, makes it:
``python tools/cli_reference.py`` rewrites it, ``--check`` exits 1 when the committed page is not
what the parser gives. mkdocs loads this file as a hook (mkdocs.yml ``hooks:``): a stale page is a
warning, so ``mkdocs build --strict`` fails on it, as it does on a broken link.

Each command's section is its ``--help``, formatted 100 columns wide with colour off, so the page does
not depend on the terminal that ran the generator.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reference" / "cli.md"
SRC_URI = "reference/cli.md"
WIDTH = "100"

HEADER = """# The `ecd` command

Generated from the parser (`ecd_cli.main.build_parser`) by `python tools/cli_reference.py`; do not
edit by hand (`tests/docs/test_cli_reference.py` and the strict site build fail when it is stale).
Every option of the services is also an environment variable and a key of a `--config` TOML file
([Run the services](../how-to/run-services.md)); exit codes follow sysexits
([Versions, logs and exit codes](../how-to/run-services.md#versions-logs-and-exit-codes)).
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of each subcommand, in the order the parser lists them (aliases once)."""
    out: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:  # argparse has no public walk over subparsers
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    out.append((name, sub))
    return out


def _sections(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[str]:
    level = "#" * min(len(path) + 1, 4)
    title = " ".join(("ecd",) + path)
    out = [f"{level} `{title}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subcommands(parser):
        out += _sections(sub, path + (name,))
    return out


def render() -> str:
    """The page's text, from the parser as it is now."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS=WIDTH, NO_COLOR="1")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        from ecd_cli.main import build_parser

        body = _sections(build_parser(), ())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return HEADER + "\n" + "\n".join(body).rstrip() + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if page.file.src_uri == SRC_URI and PAGE.read_text() != render():
        logging.getLogger("mkdocs.hooks.cli_reference").warning(
            "docs/reference/cli.md is not what the parser gives: run python tools/cli_reference.py")
    return markdown


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--check", action="store_true", help="exit 1 when the committed page is stale")
    check = args.parse_args(argv).check
    text = render()
    if check:
        stale = not PAGE.exists() or PAGE.read_text() != text
        if stale:
            print(f"{PAGE.relative_to(REPO)} is stale: run python tools/cli_reference.py", file=sys.stderr)
        return 1 if stale else 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
