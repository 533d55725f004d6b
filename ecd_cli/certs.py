"""``ecd certs init DIR``: a CA (once) and, for a first setup, certificates for a cloud, edge nodes,
devices and an operator; ``ecd certs add DIR --role ROLE NAME``: one more holder, signed by DIR's CA
(see :mod:`ecd.certs`)."""

from __future__ import annotations

import argparse

KEYS_NOTE = "keys are readable by this user only; give each holder ca.pem and its own NAME.pem/NAME.key, never ca.key"


def cmd_init(args: argparse.Namespace) -> int:
    from ecd import certs

    hosts = tuple(args.host) or certs.DEFAULT_HOSTS
    holders = certs.default_holders(args.edges, args.devices, hosts)
    certs.create_ca(args.folder, force=args.force)
    for h in holders:
        certs.add(args.folder, h, days=args.days, force=True)  # a new CA: the holders' old files are void anyway
    print(f"{args.folder}: CA and {len(holders)} certificates ({', '.join(h.name for h in holders)}), "
          f"valid {args.days} days; {KEYS_NOTE}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from ecd import certs

    holder = certs.Holder(args.role, args.name, tuple(args.host) or certs.DEFAULT_HOSTS)
    cert = certs.add(args.folder, holder, days=args.days, force=args.force)
    print(f"{cert} and {cert.with_suffix('.key')}: {args.role}:{args.name}, valid {args.days} days; {KEYS_NOTE}")
    return 0


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument("folder")
    q.add_argument("--host", action="append", default=[], help="a host name or address the certificate also names "
                   "(repeat; default localhost and 127.0.0.1); clients check roles, not hosts")
    q.add_argument("--days", type=int, default=365, help="validity of the holders' certificates")


def register(sub: argparse._SubParsersAction) -> None:
    from ecd.certs import ROLES

    p = sub.add_parser("certs", help="certificates for mutual TLS between the tiers")
    psub = p.add_subparsers(dest="certs_command", required=True)
    q = psub.add_parser("init", help="create the CA (refused where the folder has one, unless --force) and a certificate per holder")
    _common(q)
    q.add_argument("--edges", type=int, default=3, help="edge certificates edge-1 .. edge-N")
    q.add_argument("--devices", type=int, default=6, help="device certificates device-1 .. device-N")
    q.add_argument("--force", action="store_true", help="replace the folder's CA: every certificate it signed stops being trusted")
    q.set_defaults(func=cmd_init)
    q = psub.add_parser("add", help="sign one holder's new key and certificate with the folder's CA (ca.key is read in place)")
    _common(q)
    q.add_argument("--role", required=True, choices=ROLES, help="what the holder is: its certificate says ROLE:NAME")
    q.add_argument("name", metavar="NAME", help="the holder: its files are NAME.pem and NAME.key, its tls_name is NAME")
    q.add_argument("--force", action="store_true", help="replace NAME's key and certificate")
    q.set_defaults(func=cmd_add)
