"""deploy/testbed/links.toml, the shaped testbed's link profiles (benchmarks/testbed.py): every profile
loads as the testbed reads it, with positive rates and a round-trip time the delay relay can add, a
radio whose energy model is shipped, and — for the three access profiles — where each figure comes
from, next to it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from _testbed_net import LINKS_FILE, load_links  # noqa: E402

from ecd.profiles import load_radio  # noqa: E402


def test_every_link_profile_loads_with_usable_figures_and_a_shipped_radio() -> None:
    links = load_links()
    assert {"wifi", "lte", "3g", "fast", "slow", "backhaul"} <= set(links)
    for link in links.values():
        assert link.up_mbps > 0 and link.down_mbps > 0 and 0 <= link.rtt_ms <= 2000, link
        load_radio(link.radio)  # raises for a radio without an energy model
    assert links["wifi"].up_mbps > links["lte"].up_mbps > links["3g"].up_mbps  # the profiles' order
    assert (links["fast"].up_mbps, links["slow"].up_mbps) == (50.0, 1.0)  # the drop scenario's two sides


def test_the_access_profiles_name_the_source_of_each_figure() -> None:
    text = LINKS_FILE.read_text()
    for name in ("wifi", "lte", "3g"):
        section = re.search(rf"^\[{name}\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M).group(1)
        for key in ("up_mbps", "down_mbps", "rtt_ms"):
            line = next(line for line in section.splitlines() if line.startswith(key))
            assert "#" in line and len(line.split("#", 1)[1].strip()) > 8, f"[{name}] {key}: no source or caveat given"
