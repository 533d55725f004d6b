"""The ``ecd`` command line: one module per command group, each parsing arguments and calling
library functions.

Library code raises :class:`~ecd.errors.EcdError`; this entry point prints its message (no
traceback) and exits non-zero. Nothing imports this package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ecd.errors import EcdError
from ecd_cli import allocate, certs, demo, experiment, models, placement, schedule, serve, split

EXIT_ERROR = 2  # bad input or environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecd", description="ECD Runtime: split inference for crowdsensing")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (demo, models, split, placement, allocate, schedule, experiment, serve, certs):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EcdError as e:
        print(f"ecd: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
