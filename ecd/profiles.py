"""Device and radio profiles: the energy side of the ECD utility, as data files.

Named profiles ship in ``ecd/profile_data/*.toml`` (every number with its source in a comment); a
device calibrates itself with ``ecd profile``, which writes a profile of the same schema holding
per-block latencies it measured for a model.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ecd.errors import ConfigError, EcdError, RequestError
from ecd.manifest import Manifest

PROFILE_DIR = Path(__file__).resolve().parent / "profile_data"
RADIOS_FILE = PROFILE_DIR / "radios.toml"


class UnknownProfileError(RequestError):
    """A device profile or radio that is neither shipped nor a readable file."""


@dataclass(frozen=True)
class MeasuredLatency:
    """Per-block latency of one model version, measured on the device by ``ecd profile``."""

    version: str
    block_latency_s: tuple[float, ...]  # median seconds per block, batch 1


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    ram_mb: int
    cpu_idle_w: float  # W, whole device idle
    cpu_active_w: float  # W, whole device with the CPU busy
    joules_per_mac: float  # J per multiply-accumulate where no latency was measured
    measured: dict[str, MeasuredLatency] = field(default_factory=dict)  # model id -> latencies

    def __post_init__(self) -> None:
        for name in ("cpu_idle_w", "cpu_active_w", "joules_per_mac"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"device profile {self.name!r}: {name} must be finite and >= 0, got {value!r}")


@dataclass(frozen=True)
class RadioProfile:
    name: str
    description: str
    joules_per_bit: float  # marginal uplink energy
    joules_per_transfer: float  # promotion + tail energy per isolated transfer
    uplink_mbps: float  # for latency estimates only
    # the measured-energy model's (device_agent.energy), 0 where the radio's file has none:
    active_base_w: float = 0.0  # beta: power while the radio sends, beyond alpha_u x throughput
    tail_w: float = 0.0  # power in the tail after a transfer
    tail_s: float = 0.0  # how long the tail lasts


def known_devices() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml") if p != RADIOS_FILE)


def known_radios() -> list[str]:
    return sorted(tomllib.loads(RADIOS_FILE.read_text()))


def device_from_dict(d: dict, where: str) -> DeviceProfile:
    try:
        measured = {
            model: MeasuredLatency(str(m["version"]), tuple(float(v) for v in m["block_latency_s"]))
            for model, m in d.get("measured", {}).items()
        }
        return DeviceProfile(
            name=str(d["name"]),
            description=str(d.get("description", "")),
            ram_mb=int(d["ram_mb"]),
            cpu_idle_w=float(d["cpu_idle_w"]),
            cpu_active_w=float(d["cpu_active_w"]),
            joules_per_mac=float(d["joules_per_mac"]),
            measured=measured,
        )
    except KeyError as e:
        raise ConfigError(f"device profile {where}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, EcdError):
            raise
        raise ConfigError(f"device profile {where}: {e}") from None


def load_device(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (``pi4``) or a profile file written by ``ecd profile``."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if str(name_or_path) not in known_devices():
            raise UnknownProfileError(
                f"device profile {str(name_or_path)!r}: not a file, and not one of the known "
                f"profiles: {', '.join(known_devices())}"
            )
    try:
        d = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"device profile {path}: not valid TOML: {e}") from None
    return device_from_dict(d, str(path))


def load_radio(name: str) -> RadioProfile:
    radios = tomllib.loads(RADIOS_FILE.read_text())
    if name not in radios:
        raise UnknownProfileError(f"radio {name!r}: known radios: {', '.join(sorted(radios))}")
    r = radios[name]
    return RadioProfile(
        name=name,
        description=r["description"],
        joules_per_bit=float(r["joules_per_bit"]),
        joules_per_transfer=float(r["joules_per_transfer"]),
        uplink_mbps=float(r["uplink_mbps"]),
        active_base_w=float(r.get("active_base_w", 0.0)),
        tail_w=float(r.get("tail_w", 0.0)),
        tail_s=float(r.get("tail_s", 0.0)),
    )


def device_to_toml(p: DeviceProfile, header: str = "") -> str:
    """Serialise a profile (tomllib only reads), with a comment header saying where it came from."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [
        f"name = {p.name!r}".replace("'", '"'),
        f"description = {p.description!r}".replace("'", '"'),
        f"ram_mb = {p.ram_mb}",
        f"cpu_idle_w = {p.cpu_idle_w!r}",
        f"cpu_active_w = {p.cpu_active_w!r}",
        f"joules_per_mac = {p.joules_per_mac!r}",
    ]
    for model, m in sorted(p.measured.items()):
        lines += [
            "",
            f"[measured.{model}]",
            f'version = "{m.version}"',
            "block_latency_s = [" + ", ".join(f"{v!r}" for v in m.block_latency_s) + "]",
        ]
    return "\n".join(lines) + "\n"


def measure_profile(
    manifest: Manifest,
    active_w: float,
    idle_w: float,
    name: str = "",
    runs: int = 50,
    warmup: int = 5,
) -> tuple[DeviceProfile, list[float]]:
    """Time every block of ``manifest`` here and turn it into a device profile (and the latencies).

    ``joules_per_mac`` is the measured throughput over this model's blocks at ``active_w``: active
    power × measured seconds / MACs. The per-block latencies are kept under ``measured`` so the split
    decision uses them, not MACs, for this model version.
    """
    import platform

    import psutil

    from ecd.splitcheck import time_blocks

    if runs < 1 or warmup < 0:
        raise ConfigError(f"--runs / --warmup: expected >= 1 / >= 0, got {runs} / {warmup}")
    for field_name, value in (("active_power", active_w), ("idle_power", idle_w)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{field_name}: expected a finite number of watts >= 0, got {value}")
    latencies = time_blocks(manifest, runs=runs, warmup=warmup)
    total_macs = sum(b.macs for b in manifest.blocks)
    profile = DeviceProfile(
        name=name or platform.node() or "local",
        description=f"measured on {platform.node()} ({platform.machine()}, {psutil.cpu_count()} CPUs)",
        ram_mb=int(psutil.virtual_memory().total // 2**20),
        cpu_idle_w=float(idle_w),
        cpu_active_w=float(active_w),
        joules_per_mac=float(active_w) * sum(latencies) / max(total_macs, 1),
        measured={manifest.model_id: MeasuredLatency(manifest.version, tuple(latencies))},
    )
    return profile, latencies
