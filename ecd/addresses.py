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


WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertised_endpoint(advertise: str, listen_host: str, bound_port: int, peer: tuple[str, int] | None = None) -> str:
    """The ``host:port`` an edge node tells devices to dial.

    ``advertise`` is ``HOST`` or ``HOST:PORT`` (the bound port when omitted); a wildcard host
    (``0.0.0.0``, ``::``) is refused — a device cannot dial it. Without ``advertise``: the listen
    host, or, when that is a wildcard, this machine's address on the route to ``peer`` (the
    cloud: the interface devices on the same network most likely reach too)."""
    if advertise:
        host, sep, port = advertise.strip().rpartition(":")
        if not sep or (host and host.count(":") and not host.startswith("[")):  # "HOST" alone, or a bare IPv6 address
            host, port = advertise.strip(), ""
        host = host.strip("[]")
        if host in WILDCARDS:
            raise ConfigError(f"advertise: {advertise!r} is not an address a device can dial; name this node's "
                              "address (e.g. pi-edge-1.lan or 192.168.1.20)")
        if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"advertise: expected HOST or HOST:PORT, got {advertise!r}")
        return _host_port(host, int(port) if port else bound_port)
    host = listen_host.strip("[]")
    if host not in WILDCARDS:
        return _host_port(host, bound_port)
    if peer is not None:
        try:
            family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:  # no packet is sent: it only picks the route
                probe.connect(peer)
                local = probe.getsockname()[0]
            if local not in WILDCARDS:
                return _host_port(local, bound_port)
        except OSError:
            pass
    raise ConfigError(f"advertise: listening on {listen_host!r}, this node cannot tell which of its addresses devices "
                      "should dial; set --advertise HOST[:PORT]")
