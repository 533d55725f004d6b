"""The address an edge node tells devices to dial (issue 32: an edge listening on 0.0.0.0 sent
devices "0.0.0.0:PORT", which they cannot dial)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from ecd.addresses import advertised_endpoint
from ecd.errors import ConfigError
from edge_node.service import EdgeConfig, start_edge


@pytest.mark.parametrize("advertise,expected", [
    ("pi-edge-1.lan", "pi-edge-1.lan:7000"),
    ("pi-edge-1.lan:50061", "pi-edge-1.lan:50061"),
    ("192.168.1.20", "192.168.1.20:7000"),
    ("[fd00::20]:50061", "[fd00::20]:50061"),
    ("fd00::20", "[fd00::20]:7000"),
])
def test_an_advertised_host_gets_the_bound_port_unless_it_names_one(advertise: str, expected: str) -> None:
    assert advertised_endpoint(advertise, "0.0.0.0", 7000) == expected


@pytest.mark.parametrize("advertise", ["0.0.0.0", "0.0.0.0:50061", "::", "[::]:50061", "host:99999", "host:x"])
def test_an_address_no_device_can_dial_is_refused_naming_the_option(advertise: str) -> None:
    with pytest.raises(ConfigError, match=r"^advertise: "):
        advertised_endpoint(advertise, "127.0.0.1", 7000)


def test_without_advertise_the_listen_host_or_the_route_to_the_cloud() -> None:
    assert advertised_endpoint("", "127.0.0.1", 7000) == "127.0.0.1:7000"
    assert advertised_endpoint("", "0.0.0.0", 7000, ("127.0.0.1", 50051)) == "127.0.0.1:7000"  # the route to the cloud
    with pytest.raises(ConfigError, match=r"^advertise: listening on '0.0.0.0'.*set --advertise HOST\[:PORT\]$"):
        advertised_endpoint("", "0.0.0.0", 7000)


def test_an_edge_with_a_wildcard_advertise_refuses_to_start_before_it_listens() -> None:
    with pytest.raises(ConfigError, match=r"^advertise: '0.0.0.0:50061' is not an address a device can dial"):
        asyncio.run(start_edge(replace(EdgeConfig(), advertise="0.0.0.0:50061", port=0, metrics_port=-1)))
