"""``ecd certs init`` / ``ecd certs add`` (ecd/certs.py): the CA is created once, one holder is signed
at a time with it (ca.key read in place, never copied), and what ``add`` signs passes a mutual-TLS
handshake with a server holding a certificate from ``init``, which reads the role from it."""

from __future__ import annotations

import datetime as dt
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cli import ecd
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ecd import certs
from ecd.errors import ConfigError
from ecd.transport import tls


def cert(folder: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((folder / f"{name}.pem").read_bytes())


def signed_by(c: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        ca.public_key().verify(c.signature, c.tbs_certificate_bytes, ec.ECDSA(c.signature_hash_algorithm))
    except Exception:  # noqa: BLE001 — cryptography's InvalidSignature
        return False
    return c.issuer == ca.subject


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("certs") / "tls"
    done = ecd("certs", "init", str(root), "--edges", "1", "--devices", "0")
    assert done.returncode == 0, done.stderr
    return root


def test_init_creates_the_ca_once(folder: Path, tmp_path: Path) -> None:
    ca = (folder / "ca.pem").read_bytes(), (folder / "ca.key").read_bytes()
    again = ecd("certs", "init", str(folder), "--edges", "0", "--devices", "0")
    assert again.returncode == 78 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "already holds a CA" in again.stderr and "--force" in again.stderr
    assert ((folder / "ca.pem").read_bytes(), (folder / "ca.key").read_bytes()) == ca
    other = tmp_path / "tls"
    assert ecd("certs", "init", str(other), "--edges", "0", "--devices", "0").returncode == 0
    first = (other / "ca.key").read_bytes()
    forced = ecd("certs", "init", str(other), "--edges", "0", "--devices", "0", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (other / "ca.key").read_bytes() != first and signed_by(cert(other, "cloud"), cert(other, "ca"))
    assert (other / "ca.key").stat().st_mode & 0o777 == 0o600 and (other / "cloud.key").stat().st_mode & 0o777 == 0o600


def test_add_signs_one_holder_with_the_folders_ca(folder: Path) -> None:
    ca_key = (folder / "ca.key").read_bytes()
    before = {p.name for p in folder.iterdir()}
    done = ecd("certs", "add", str(folder), "--role", "device", "phone-7", "--host", "10.0.0.7", "--days", "30")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in folder.iterdir()} - before == {"phone-7.pem", "phone-7.key"}
    assert (folder / "phone-7.key").stat().st_mode & 0o777 == 0o600
    assert (folder / "ca.key").read_bytes() == ca_key  # read, not rewritten
    assert not any(ca_key in p.read_bytes() for p in folder.iterdir() if p.name != "ca.key")
    c = cert(folder, "phone-7")
    assert signed_by(c, cert(folder, "ca"))
    # the role exactly as `init` writes it (ecd.transport.tls reads it): CN ROLE:NAME, DNS name ROLE.ecd
    assert c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "device:phone-7"
    assert cert(folder, "edge-1").subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "edge:edge-1"
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "device.ecd" in san.get_values_for_type(x509.DNSName)
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert c.not_valid_after_utc - c.not_valid_before_utc <= dt.timedelta(days=30, minutes=5)


def test_add_refuses_a_duplicate_unless_forced_and_an_unknown_role(folder: Path, tmp_path: Path) -> None:
    assert ecd("certs", "add", str(folder), "--role", "edge", "edge-2").returncode == 0
    old = (folder / "edge-2.key").read_bytes()
    dup = ecd("certs", "add", str(folder), "--role", "edge", "edge-2")
    assert dup.returncode == 78 and dup.stderr.count("\n") == 1 and "edge-2 already has" in dup.stderr
    assert (folder / "edge-2.key").read_bytes() == old
    assert ecd("certs", "add", str(folder), "--role", "edge", "edge-2", "--force").returncode == 0
    assert (folder / "edge-2.key").read_bytes() != old
    bad = ecd("certs", "add", str(folder), "--role", "visitor", "v")
    assert bad.returncode == 64 and "--role" in bad.stderr and not (folder / "v.pem").exists()
    for name in ("ca", "../x", ".hidden"):
        with pytest.raises(ConfigError, match="cannot name a certificate file"):
            certs.add(folder, certs.Holder("edge", name))
    no_ca = ecd("certs", "add", str(tmp_path / "none"), "--role", "edge", "e")
    assert no_ca.returncode == 78 and "ecd certs init" in no_ca.stderr


def health(target: str, folder: Path, name: str) -> str:
    """What the server answers a holder ``name`` of ``folder``: the caller it saw, or the status."""
    with tls.channel(target, tls.load(str(folder), name), "cloud") as ch:
        try:
            return ch.unary_unary("/test.Who/Am")(b"", timeout=10).decode()
        except grpc.RpcError as e:
            return e.code().name


def test_a_holder_from_add_passes_mutual_tls_with_a_server_from_init(folder: Path, tmp_path: Path) -> None:
    assert ecd("certs", "add", str(folder), "--role", "operator", "ops-laptop").returncode == 0
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Who", {
        "Am": grpc.unary_unary_rpc_method_handler(lambda _req, ctx: str(tls.caller_of(ctx)).encode())})])
    port = server.add_secure_port("127.0.0.1:0", tls.load(str(folder), "cloud").server_credentials())
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        assert health(target, folder, "ops-laptop") == "operator:ops-laptop"
        stranger = tmp_path / "other"  # the same holder name signed by another CA: refused in the handshake
        certs.init(stranger, [certs.Holder("operator", "ops-laptop")])
        assert health(target, stranger, "ops-laptop") == "UNAVAILABLE"
    finally:
        server.stop(None)
