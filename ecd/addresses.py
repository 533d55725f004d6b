"""Network addresses as options and requests spell them: ``host:port`` lists (``--cloud A,B``) and
the one canonical spelling of an endpoint (plain functions: the registry and the transport both use
them)."""

from __future__ import annotations

import ipaddress
import socket

from ecd.errors import ConfigError


def split_addresses(value: str, option: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` -> [(host, port)]; a one-line ConfigError naming ``option``."""
    out = []
    for part in value.split(","):
        host, sep, port = part.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{option}: expected host:port, or several separated by commas, got {part.strip()!r}")
        out.append((host, int(port)))
    return out


def canonical_endpoint(endpoint: str) -> str | None:
    """One spelling per address, so that one edge node's endpoint cannot be registered again by
    another under an alias (``localhost:P``, ``127.1:P``, ``2130706433:P``, ``127.0.0.001:P``,
    ``[::ffff:127.0.0.1]:P`` are all ``127.0.0.1:P``); a name is lower-cased. None when it is not
    ``host:port``."""
    host, sep, port = endpoint.strip().rpartition(":")
    host = host.strip("[]").lower().rstrip(".")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        return None
    if host in ("localhost", "localhost.localdomain"):
        host = "127.0.0.1"
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        try:  # the legacy IPv4 spellings inet_aton takes: 127.1, 2130706433, 0x7f.1, 127.0.0.001
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):  # not an address (a name), or a NUL in it
            ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip is not None:
        host = str(ip) if ip.version == 4 else f"[{ip}]"
    return f"{host}:{int(port)}"
