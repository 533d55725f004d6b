"""/metrics over TLS (issue 30): with ``metrics_tls`` a tier serves its figures with its own
certificate and only to a scraper presenting a certificate of the same CA — as Prometheus does
with ``tls_config`` — since the figures name every device."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Counter

from ecd import certs
from ecd.errors import ConfigError
from ecd.metrics import metrics_tls, start_metrics


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("tls") / "certs"
    certs.init(f, certs.default_holders(edges=1, devices=1))
    return f


def context(folder: Path, holder: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    ctx.check_hostname = False  # the tiers' certificates name their role, not this test's address
    if holder:
        ctx.load_cert_chain(str(folder / f"{holder}.pem"), str(folder / f"{holder}.key"))
    return ctx


def test_metrics_over_tls_answer_only_a_scraper_with_a_certificate_of_the_ca(folder: Path) -> None:
    registry = CollectorRegistry()
    Counter("ecd_probe", "a figure to read", registry=registry).inc()
    port = start_metrics(registry, "127.0.0.1", 0, str(folder), "edge-1")
    url = f"https://127.0.0.1:{port}/metrics"
    body = urllib.request.urlopen(url, context=context(folder, "operator"), timeout=10).read().decode()
    assert "ecd_probe_total 1.0" in body
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(url, context=context(folder, None), timeout=10).read()  # no client certificate
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()  # plaintext


def test_metrics_tls_needs_a_tls_dir_and_is_off_by_default() -> None:
    assert metrics_tls(SimpleNamespace(metrics_tls=False, tls_dir="/x", tls_name="edge-1")) == ("", "")
    assert metrics_tls(SimpleNamespace(metrics_tls=True, tls_dir="/x", tls_name="edge-1")) == ("/x", "edge-1")
    with pytest.raises(ConfigError, match=r"^metrics_tls: needs tls_dir"):
        metrics_tls(SimpleNamespace(metrics_tls=True, tls_dir="", tls_name="edge-1"))
