"""``ecd certs init DIR``: a CA and certificates for a cloud, edge nodes, devices and an operator
(see :mod:`ecd.certs`)."""

from __future__ import annotations

import argparse


def cmd_init(args: argparse.Namespace) -> int:
    from ecd import certs

    hosts = tuple(args.host) or ("localhost", "127.0.0.1")
    holders = certs.default_holders(args.edges, args.devices, hosts)
    written = certs.init(args.folder, holders, days=args.days)
    print(f"{args.folder}: CA and {len(written) - 1} certificates ({', '.join(h.name for h in holders)}), "
          f"valid {args.days} days; keys are readable by this user only")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="certificates for mutual TLS between the tiers")
    psub = p.add_subparsers(dest="certs_command", required=True)
    q = psub.add_parser("init", help="create a CA (or reuse the folder's) and a certificate per holder")
    q.add_argument("folder")
    q.add_argument("--edges", type=int, default=3, help="edge certificates edge-1 .. edge-N")
    q.add_argument("--devices", type=int, default=6, help="device certificates device-1 .. device-N")
    q.add_argument("--host", action="append", default=[], help="a host name or address every certificate also names "
                   "(repeat; default localhost and 127.0.0.1); clients check roles, not hosts")
    q.add_argument("--days", type=int, default=365, help="validity of the holders' certificates")
    q.set_defaults(func=cmd_init)
