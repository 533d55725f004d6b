"""The ``ecd`` command line: one module per command group, each parsing arguments and calling
library functions.

Library code raises :class:`~ecd.errors.EcdError`; this entry point prints its message (no
traceback) and exits with the code :mod:`ecd_cli.exits` gives it. Nothing imports this package.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from typing import Sequence

from ecd.errors import EcdError
from ecd_cli import allocate, certs, demo, experiment, exits, logs, models, placement, privacy, schedule, serve, split


class Parser(argparse.ArgumentParser):
    """argparse, exiting 64 (usage) on a flag that is not one instead of argparse's 2."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(exits.USAGE, f"{self.prog}: error: {message}\n")


def version() -> str:
    try:
        return f"ecd {importlib.metadata.version('ecd-runtime')}"
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "ecd (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ecd", description="ECD Runtime: split inference for crowdsensing")
    parser.add_argument("--version", action="version", version=version())
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=logs.FORMATS, default="text",
                        help="log lines as text with an ISO-8601 timestamp, or one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (demo, models, privacy, split, placement, allocate, schedule, experiment, serve, certs):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.verbose, args.log_format)
    try:
        return args.func(args)
    except EcdError as e:
        print(f"ecd: error: {e}", file=sys.stderr)
        return exits.exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
