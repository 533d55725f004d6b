"""The testbed's network: three namespaces (device, edge, cloud) joined by two shaped veth links.

    device ns                 edge ns                               cloud ns
    10.77.1.1 --[access]-- 10.77.1.2  (relays)  10.77.2.1 --[backhaul]-- 10.77.2.2  (relay)
                          edge node on 127.0.0.1:EDGE_PORT                cloud on 127.0.0.1:port

* **Bandwidth**: ``tc tbf`` on each veth's egress: the device's side shapes the uplink, the edge's
  side the downlink (and the same for the backhaul). :meth:`Testbed.set_uplink` changes the rate
  mid-run (``tc qdisc change``) for the drop scenario.
* **Latency**: the kernel has no ``netem``, so each link's RTT is added by a userspace relay
  (``_testbed_relay.py``) on the far side: it holds every chunk half the RTT in each direction.
  The device reaches the edge node and the cloud only through relays in the edge namespace (the
  cloud's address goes through the backhaul relay too): every byte it sends crosses the shaped
  access link, as a phone's would, and no IP forwarding is needed.
* **Only what it made**: every name starts with a per-run prefix (``tb`` + 6 random hex digits);
  :meth:`Testbed.close` deletes the namespaces (their veths go with them) and the cgroups, and is
  called on every exit (``with``, and ``atexit`` for a harness that dies on an exception).
* **Pi-like bounds** (optional): each tier's processes in a cgroup (v1 or v2 files, written
  directly) with a 1 GiB memory limit and a CPU quota; skipped with a message where the files are
  not writable.

The edge node listens on a fixed port inside its own namespace (nothing else lives there, so it
cannot clash): its advertised address is the relay's, which needs the port before the edge starts.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

LINKS_FILE = Path(__file__).resolve().parents[1] / "deploy" / "testbed" / "links.toml"
EDGE_PORT = 50061  # inside the edge namespace only
DEVICE, EDGE_DEV, EDGE_UP, CLOUD = "10.77.1.1", "10.77.1.2", "10.77.2.1", "10.77.2.2"
TIERS = ("device", "edge", "cloud")


@dataclass(frozen=True)
class Link:
    name: str
    description: str
    up_mbps: float
    down_mbps: float
    rtt_ms: float
    radio: str = "wifi"


def load_links(path: Path = LINKS_FILE) -> dict[str, Link]:
    data = tomllib.loads(path.read_text())
    return {name: Link(name, d["description"], float(d["up_mbps"]), float(d["down_mbps"]), float(d["rtt_ms"]),
                       d.get("radio", "wifi")) for name, d in data.items()}


def why_not_available() -> str:
    """'' where this process may build the testbed, else why not (for a clear skip)."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, tc)"
    for tool in ("ip", "tc", "nsenter"):
        if shutil.which(tool) is None:
            return f"the testbed needs `{tool}` on PATH"
    probe = f"tbprobe{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return ""


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"testbed: `{' '.join(argv)}` failed: {done.stderr.strip()}")


def _tbf(mbps: float) -> list[str]:
    """tbf arguments for ``mbps``: a burst of 10 ms at the rate (at least two MTUs), a queue of
    up to 500 ms (a cellular-like buffer: the link queues before it drops)."""
    rate_bytes = mbps * 1e6 / 8
    burst = max(int(rate_bytes / 100), 3200)
    return ["rate", f"{mbps}mbit", "burst", str(burst), "latency", "500ms"]


class Testbed:
    """The namespaces, veths, shaping and cgroups of one run; :meth:`close` removes them all."""

    def __init__(self, access: Link, backhaul: Link, prefix: str = "", cgroups: bool = False,
                 memory_bytes: int = 1 << 30, cpu_quota: float = 1.0):
        self.prefix = prefix or f"tb{secrets.token_hex(3)}"
        self.access, self.backhaul = access, backhaul
        self.ns = {t: f"{self.prefix}-{t}" for t in TIERS}
        self.dev = {"device": f"{self.prefix}d", "edge_dev": f"{self.prefix}e", "edge_up": f"{self.prefix}u",
                    "cloud": f"{self.prefix}c"}
        self.cgroup_dirs: dict[str, list[Path]] = {}
        self.cgroup_note = ""
        self._made: list[str] = []
        atexit.register(self.close)
        try:
            self._build()
            if cgroups:
                self._cgroups(memory_bytes, cpu_quota)
        except BaseException:
            self.close()
            raise

    # --- building --------------------------------------------------------------------------------

    def _build(self) -> None:
        for ns in self.ns.values():
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        d = self.dev
        self._veth(d["device"], "device", DEVICE, d["edge_dev"], "edge", EDGE_DEV)
        self._veth(d["edge_up"], "edge", EDGE_UP, d["cloud"], "cloud", CLOUD)
        self.shape("device", d["device"], self.access.up_mbps, add=True)
        self.shape("edge", d["edge_dev"], self.access.down_mbps, add=True)
        self.shape("edge", d["edge_up"], self.backhaul.up_mbps, add=True)
        self.shape("cloud", d["cloud"], self.backhaul.down_mbps, add=True)

    def _veth(self, a: str, ns_a: str, ip_a: str, b: str, ns_b: str, ip_b: str) -> None:
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for dev, tier, ip in ((a, ns_a, ip_a), (b, ns_b, ip_b)):
            _run("ip", "link", "set", dev, "netns", self.ns[tier])
            _run("ip", "-n", self.ns[tier], "addr", "add", f"{ip}/24", "dev", dev)
            _run("ip", "-n", self.ns[tier], "link", "set", dev, "up")

    def shape(self, tier: str, dev: str, mbps: float, add: bool = False) -> None:
        _run("nsenter", f"--net=/run/netns/{self.ns[tier]}", "tc", "qdisc", "add" if add else "change", "dev", dev, "root",
             "tbf", *_tbf(mbps))

    def set_uplink(self, mbps: float, downlink: bool = True) -> None:
        """Change the access link's rate now (``tc qdisc change``): the drop scenario."""
        self.shape("device", self.dev["device"], mbps)
        if downlink:
            self.shape("edge", self.dev["edge_dev"], mbps)

    def qdisc(self, tier: str) -> str:
        """``tc -s qdisc show`` in ``tier``'s namespace (what the shaping did, for the record)."""
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.ns[tier]}", "tc", "-s", "qdisc", "show"],
                              capture_output=True, text=True, check=False).stdout

    def prefix_argv(self, tier: str) -> list[str]:
        """The command prefix that runs a program in ``tier``'s namespace (``nsenter`` execs in place,
        so the program stays the harness's child and dies with it)."""
        return ["nsenter", f"--net=/run/netns/{self.ns[tier]}"]

    # --- cgroups ------------------------------------------------------------------------------

    def _cgroups(self, memory_bytes: int, cpu_quota: float) -> None:
        root = Path("/sys/fs/cgroup")
        period = 100_000
        try:
            if (root / "cgroup.controllers").exists():  # v2
                for tier in TIERS:
                    g = root / self.ns[tier]
                    g.mkdir()
                    self.cgroup_dirs[tier] = [g]
                    (g / "memory.max").write_text(str(memory_bytes))
                    (g / "cpu.max").write_text(f"{int(cpu_quota * period)} {period}")
            else:  # v1: one directory per controller
                for tier in TIERS:
                    mem, cpu = root / "memory" / self.ns[tier], root / "cpu" / self.ns[tier]
                    self.cgroup_dirs[tier] = []
                    for g in (mem, cpu):
                        g.mkdir()
                        self.cgroup_dirs[tier].append(g)
                    (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    (cpu / "cpu.cfs_period_us").write_text(str(period))
                    (cpu / "cpu.cfs_quota_us").write_text(str(int(cpu_quota * period)))
            self.cgroup_note = f"each tier in a cgroup: memory {memory_bytes >> 20} MiB, CPU quota {cpu_quota:g} core"
        except OSError as e:
            self._remove_cgroups()
            self.cgroup_note = f"cgroups skipped: {e.strerror} ({e.filename})"

    def enter_cgroup(self, tier: str, pid: int) -> None:
        for g in self.cgroup_dirs.get(tier, []):
            (g / "cgroup.procs").write_text(str(pid))

    def _remove_cgroups(self) -> None:
        for dirs in self.cgroup_dirs.values():
            for g in dirs:
                try:
                    g.rmdir()
                except OSError:
                    pass
        self.cgroup_dirs = {}

    # --- the end ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Delete what this run made (namespaces take their veths and qdiscs with them). Call after
        the processes in them have ended; safe to call twice."""
        self._remove_cgroups()
        while self._made:
            subprocess.run(["ip", "netns", "del", self._made.pop()], capture_output=True, check=False)
        atexit.unregister(self.close)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
