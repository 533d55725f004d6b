"""``ecd certs init``: a private certificate authority and one certificate per role, for mutual TLS
between every tier.

Each certificate names its holder ``ROLE:NAME`` in its common name (role: cloud, edge, device,
operator) and carries the DNS name ``ROLE.ecd`` beside any host names given: a client checks the
server's certificate against the role it expects (``grpc.ssl_target_name_override``), so a device
only streams to an *edge* certificate signed by this CA, wherever the edge stands, and a server reads
the caller's role from the client certificate (:mod:`ecd.transport.tls`).

Built with the ``cryptography`` package (the ``cloud`` extra: the operator creates certificates on
an operator's machine; devices and edge nodes only read the PEM files, which gRPC does itself).
The folder is created 0700 and every key 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ecd.errors import ConfigError, MissingExtraError

ROLES = ("cloud", "edge", "device", "operator")
CA_NAME = "ca"


@dataclass(frozen=True)
class Holder:
    role: str
    name: str
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1")

    @property
    def file_stem(self) -> str:
        return self.name


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise MissingExtraError("certs: creating certificates needs cryptography: pip install 'ecd-runtime[cloud]'") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file keeps its mode through O_CREAT


def _san(x509, hosts: tuple[str, ...], role: str) -> list:
    names = [x509.DNSName(f"{role}.ecd")]
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def init(folder: str | Path, holders: list[Holder], days: int = 365, now: dt.datetime | None = None) -> list[Path]:
    """Create ``folder`` with ``ca.pem``/``ca.key`` and ``NAME.pem``/``NAME.key`` for each holder.
    An existing CA in the folder is reused (so more holders can be added later); ``now`` and
    ``days`` set the validity (tests make expired certificates with them)."""
    x509, hashes, serialization, ec, eku, NameOID = _crypto()
    root = Path(folder)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for h in holders:
        if h.role not in ROLES:
            raise ConfigError(f"certs: role {h.role!r} is not one of {', '.join(ROLES)}")
        if not h.name or "/" in h.name or h.name.startswith(".") or h.name == CA_NAME:
            raise ConfigError(f"certs: {h.name!r} cannot name a certificate file")
    now = now or dt.datetime.now(dt.timezone.utc)
    not_after = now + dt.timedelta(days=days)
    pem = serialization.Encoding.PEM
    ca_key_path, ca_path = root / f"{CA_NAME}.key", root / f"{CA_NAME}.pem"
    if ca_key_path.exists() and ca_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ECD Runtime CA")])
        ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=max(days, 3650)))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        _write(ca_key_path, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
        _write(ca_path, ca.public_bytes(pem), 0o644)
    written = [ca_path]
    for h in holders:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{h.role}:{h.name}")]))
                .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName(_san(x509, h.hosts, h.role)), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH, eku.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write(root / f"{h.file_stem}.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
        _write(root / f"{h.file_stem}.pem", cert.public_bytes(pem), 0o644)
        written.append(root / f"{h.file_stem}.pem")
    return written


def default_holders(edges: int = 3, devices: int = 6, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> list[Holder]:
    """One cloud, ``edges`` edge nodes (edge-1 …), ``devices`` devices (device-1 …) and an operator."""
    return ([Holder("cloud", "cloud", hosts)] + [Holder("edge", f"edge-{k}", hosts) for k in range(1, edges + 1)]
            + [Holder("device", f"device-{k}", hosts) for k in range(1, devices + 1)] + [Holder("operator", "operator", hosts)])
