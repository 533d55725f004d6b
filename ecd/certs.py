"""``ecd certs``: a private certificate authority, and one key and certificate per holder, for mutual
TLS between every tier.

Key custody: ``ecd certs init DIR`` creates the CA once (``ca.key`` stays in DIR, on the operator's
machine); ``ecd certs add DIR --role ROLE NAME`` signs one holder with it, reading ``ca.key`` and
never writing it anywhere else. A holder gets ``ca.pem`` and its own ``NAME.pem``/``NAME.key`` only
(deploy/ mounts nothing more into a tier: tests/deploy/test_key_custody.py).

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
DEFAULT_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Holder:
    role: str
    name: str
    hosts: tuple[str, ...] = DEFAULT_HOSTS

    @property
    def file_stem(self) -> str:
        return self.name

    def check(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"certs: role {self.role!r} is not one of {', '.join(ROLES)}")
        if not self.name or "/" in self.name or self.name.startswith(".") or self.name == CA_NAME:
            raise ConfigError(f"certs: {self.name!r} cannot name a certificate file")


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


def _folder(folder: str | Path) -> Path:
    root = Path(folder)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def _ca_paths(root: Path) -> tuple[Path, Path]:
    return root / f"{CA_NAME}.key", root / f"{CA_NAME}.pem"


def _private_pem(serialization, key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _new_ca(root: Path, now: dt.datetime, days: int):
    x509, hashes, serialization, ec, _, NameOID = _crypto()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ECD Runtime CA")])
    ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=max(days, 3650)))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key_path, cert_path = _ca_paths(root)
    _write(key_path, _private_pem(serialization, ca_key), 0o600)
    _write(cert_path, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_key, ca


def _load_ca(root: Path):
    """The CA key and certificate in ``root``, read in place (the key is never written elsewhere)."""
    x509, _, serialization, *_ = _crypto()
    key_path, cert_path = _ca_paths(root)
    try:
        return (serialization.load_pem_private_key(key_path.read_bytes(), None),
                x509.load_pem_x509_certificate(cert_path.read_bytes()))
    except FileNotFoundError as e:
        raise ConfigError(f"certs: {e.filename} is missing: create the CA first with `ecd certs init {root}`") from None


def _sign(root: Path, ca_key, ca, h: Holder, now: dt.datetime, days: int) -> Path:
    """A new key and a certificate for ``h``, as NAME.key (0600) and NAME.pem in ``root``."""
    x509, hashes, serialization, ec, eku, NameOID = _crypto()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{h.role}:{h.name}")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(_san(x509, h.hosts, h.role)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH, eku.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(root / f"{h.file_stem}.key", _private_pem(serialization, key), 0o600)
    _write(root / f"{h.file_stem}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return root / f"{h.file_stem}.pem"


def create_ca(folder: str | Path, force: bool = False, now: dt.datetime | None = None, days: int = 3650) -> Path:
    """``ecd certs init``: a new CA in ``folder``. An existing one is kept unless ``force``: replacing
    it silently would make every certificate it signed untrusted at once."""
    root = _folder(folder)
    if any(p.exists() for p in _ca_paths(root)) and not force:
        raise ConfigError(f"certs: {root} already holds a CA (ca.pem/ca.key); every certificate it signed would stop "
                          "being trusted: pass --force to replace it, or `ecd certs add` to sign another holder")
    _new_ca(root, now or dt.datetime.now(dt.timezone.utc), days)
    return _ca_paths(root)[1]


def add(folder: str | Path, holder: Holder, days: int = 365, now: dt.datetime | None = None, force: bool = False) -> Path:
    """``ecd certs add``: sign one holder with the CA in ``folder``. A holder that already has a
    certificate there is refused unless ``force`` (a new key for it: the old files are overwritten)."""
    holder.check()
    root = Path(folder)
    ca_key, ca = _load_ca(root)
    taken = [p.name for p in (root / f"{holder.file_stem}.pem", root / f"{holder.file_stem}.key") if p.exists()]
    if taken and not force:
        raise ConfigError(f"certs: {holder.name} already has {' and '.join(taken)} in {root}: pass --force to issue it a new "
                          "key and certificate")
    return _sign(root, ca_key, ca, holder, now or dt.datetime.now(dt.timezone.utc), days)


def init(folder: str | Path, holders: list[Holder], days: int = 365, now: dt.datetime | None = None) -> list[Path]:
    """Create ``folder`` with ``ca.pem``/``ca.key`` and ``NAME.pem``/``NAME.key`` for each holder, in one
    go (the demo, the tests). An existing CA in the folder is reused and the holders' files are
    replaced; ``now`` and ``days`` set the validity (tests make expired certificates with them)."""
    for h in holders:
        h.check()
    root = _folder(folder)
    now = now or dt.datetime.now(dt.timezone.utc)
    if all(p.exists() for p in _ca_paths(root)):
        ca_key, ca = _load_ca(root)
    else:
        ca_key, ca = _new_ca(root, now, days)
    return [_ca_paths(root)[1]] + [_sign(root, ca_key, ca, h, now, days) for h in holders]


def default_holders(edges: int = 3, devices: int = 6, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> list[Holder]:
    """One cloud, ``edges`` edge nodes (edge-1 …), ``devices`` devices (device-1 …) and an operator."""
    return ([Holder("cloud", "cloud", hosts)] + [Holder("edge", f"edge-{k}", hosts) for k in range(1, edges + 1)]
            + [Holder("device", f"device-{k}", hosts) for k in range(1, devices + 1)] + [Holder("operator", "operator", hosts)])
