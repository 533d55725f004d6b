"""Mutual TLS between the tiers: the files ``ecd certs init`` writes (:mod:`ecd.certs`), turned into
gRPC credentials, and the caller (:class:`Caller`: role and name) read back from its certificate.

A folder holds ``ca.pem`` and, per holder, ``NAME.pem`` / ``NAME.key``. A certificate's common
name is ``ROLE:NAME``; every certificate also carries the DNS name ``ROLE.ecd``, which a client
checks instead of the address it dialled, so "is this an edge node of ours?" is the question TLS
answers wherever the edge node stands.

Without a folder a service speaks plaintext, and only on loopback unless ``allow_plaintext`` (the
tiers' ``--insecure``) says otherwise; the ``ecd`` command starts a tier without a folder only with
``--insecure`` (``ecd_cli.serve``). A plaintext peer has no role, so the authorization policy
(:mod:`ecd.transport.auth`) falls back to what the service checked before TLS existed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc

from ecd.errors import ConfigError

ROLES = ("cloud", "edge", "device", "operator")


@dataclass(frozen=True)
class Caller:
    """Who is calling: a role and a name from the client certificate; ``role == ""`` for a
    plaintext caller (no certificate)."""

    role: str = ""
    name: str = ""

    def __str__(self) -> str:
        return f"{self.role}:{self.name}" if self.role else "anonymous"


ANONYMOUS = Caller()


@dataclass(frozen=True)
class Tls:
    """One holder's credentials: the CA that signs every tier, and its own certificate and key."""

    ca: bytes
    cert: bytes
    key: bytes
    name: str

    def server_credentials(self) -> grpc.ServerCredentials:
        """Servers require a client certificate signed by the same CA (mutual TLS)."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert)


def load(folder: str, name: str, option_name: str = "--tls-dir") -> Tls | None:
    """The credentials of holder ``name`` in ``folder``; None when ``folder`` is empty (plaintext)."""
    if not folder:
        return None
    root = Path(folder)
    files = {"ca": root / "ca.pem", "cert": root / f"{name}.pem", "key": root / f"{name}.key"}
    data = {}
    for kind, path in files.items():
        try:
            data[kind] = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{option_name}: cannot read {path} ({e.strerror}); create it with `ecd certs init {folder}`") from None
    return Tls(data["ca"], data["cert"], data["key"], name)


def is_loopback(host: str) -> bool:
    """True for an address (or a name resolving only to addresses) of this machine's loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def host_of(target: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port``."""
    return target.rsplit(":", 1)[0] if ":" in target else target


def check_plaintext(tls: Tls | None, host: str, allow_plaintext: bool, what: str) -> None:
    """Refuse plaintext beyond loopback unless the operator forced it."""
    if tls is None and not allow_plaintext and not is_loopback(host):
        raise ConfigError(f"{what}: {host} is not a loopback address, and plaintext is refused there; pass --tls-dir "
                          "(create one with `ecd certs init DIR`) or run plaintext on purpose with --insecure")


def channel_options(server_role: str) -> list[tuple[str, str]]:
    """Check the server's certificate for its role (``ROLE.ecd``), not for the address dialled."""
    return [("grpc.ssl_target_name_override", f"{server_role}.ecd")]


def channel(target: str, tls: Tls | None, server_role: str, options: list | None = None) -> grpc.Channel:
    options = list(options or [])
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.channel_credentials(), options=options + channel_options(server_role))


def aio_channel(target: str, tls: Tls | None, server_role: str, options: list | None = None) -> grpc.aio.Channel:
    options = list(options or [])
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options + channel_options(server_role))


def caller_of(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> Caller:
    """The caller, from its client certificate; :data:`ANONYMOUS` without one."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    if not names:
        return ANONYMOUS
    role, _, name = names[0].decode(errors="replace").partition(":")
    return Caller(role, name) if role in ROLES and name else ANONYMOUS
