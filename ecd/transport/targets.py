"""Where a client dials: one ``host:port``, or several cloud replicas as an ordered preference list
(``--cloud A,B``): the first that answers is used, the next when it fails.

Several addresses become one gRPC target listing every address's IPs in order (``ipv4:a:p,b:q``):
gRPC's default ``pick_first`` policy connects to the first that answers, and when that connection
breaks it tries the list again from the top, so failing over and coming back need no code here
(etcd's clients do the same across their endpoints). Names are resolved once, when the client
starts; TLS checks the server's certificate for its role, not for the address dialled
(:func:`ecd.transport.tls.channel_options`), so dialling by IP keeps mutual TLS intact.
"""

from __future__ import annotations

import ipaddress
import socket

from ecd.addresses import split_addresses
from ecd.errors import ConfigError
from ecd.transport import tls as tls_


def _ips(host: str, port: int, family: int, option: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except OSError as e:
        raise ConfigError(f"{option}: cannot resolve {host} ({e.strerror or e})") from None
    seen: list[str] = []
    for info in infos:
        if info[4][0] not in seen:
            seen.append(info[4][0])
    return seen


def client_target(value: str, tls: tls_.Tls | None, allow_plaintext: bool, option: str) -> str:
    """The gRPC target for ``value``, every address checked (plaintext only to loopback unless
    forced). One address is dialled as written; several as one ordered list of IPs."""
    addresses = split_addresses(value, option)
    for host, _ in addresses:
        tls_.check_plaintext(tls, host, allow_plaintext, option)
    if len(addresses) == 1:
        return value.strip()
    first = addresses[0][0]
    try:
        v6 = ipaddress.ip_address(first).version == 6
    except ValueError:
        v6 = False
    family = socket.AF_INET6 if v6 else socket.AF_INET
    listed = []
    for host, port in addresses:
        for ip in _ips(host, port, family, option):
            listed.append(f"[{ip}]:{port}" if v6 else f"{ip}:{port}")
    return ("ipv6:" if v6 else "ipv4:") + ",".join(listed)
