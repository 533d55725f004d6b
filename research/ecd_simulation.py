"""Paper 000 §V.B's numerical simulation, on our measured model, profiles and privacy curve.

Two cloud servers, ten edge nodes and 100 devices; every device captures a growing amount of image
data and uploads it at the split its strategy picks. Strategies (paper 000 Figs. 6–8,
ALGORITHMS.md): ECD with (w_energy, w_privacy) = (0.8, 0.2) and (0.2, 0.8); **average** (always the
middle of the device's splits); **max** (the device runs all the lower layers it may); **raw**
(b = 0); **random** (a uniform split per image). Metrics: device energy vs captured data (Fig. 6),
output similarity (Fig. 7a), privacy-protection efficiency (Fig. 7b), computing load over servers,
edge nodes and devices (Fig. 8).

Choices the paper leaves open (ours):

* devices draw a shipped profile (Pi Zero 2 W, 3B+, 4, 5, phone) and a radio (WiFi, LTE, 5G)
  uniformly with a fixed seed; device i attaches to edge node i mod 10, edge node j to server j mod 2;
* the "lower layers" a device may run are blocks [0, n − 2] (so b ≤ n − 2): the edge runs up to
  block n − 1 and the cloud the task head — paper 000's fixed lower layers and swappable heads;
* one captured image is the model's raw input; its data size is the float32 tensor at split 0;
* a device uploads its data as one streaming session: per-bit radio energy for every byte, one
  promotion + tail per device (the per-frame decision, ecd/split.py, still uses the radio's per-transfer cost);
* similarity is the (running-minimum) measured P_priv of the split used, averaged over images;
  privacy-protection efficiency = Σ_images (1 − P_priv) / device joules;
* computing load is MACs per node; Fig. 8's "raw" panel has devices and edges forward raw data so
  the servers compute everything.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ecd.manifest import Manifest
from ecd.profiles import DeviceProfile, RadioProfile, known_devices, known_radios, load_device, load_radio
from ecd.split import comm_energy, compute_energy, decide_splits
from ecd.leakage import privacy_curve

ECD_WEIGHTS = {"ecd_energy": (0.8, 0.2), "ecd_privacy": (0.2, 0.8)}
STRATEGIES = ("ecd_energy", "ecd_privacy", "average", "max", "raw", "random")
DATA_SIZES_MB = (1, 2, 5, 10, 20, 50, 100)


@dataclass(frozen=True)
class Topology:
    servers: int = 2
    edge_nodes: int = 10
    devices: int = 100
    seed: int = 0


@dataclass(frozen=True)
class Fleet:
    device_profiles: list[DeviceProfile]
    radios: list[RadioProfile]
    device_index: np.ndarray  # which profile each device has
    radio_index: np.ndarray
    edge_of_device: np.ndarray
    server_of_edge: np.ndarray


def make_fleet(t: Topology) -> Fleet:
    rng = np.random.default_rng(t.seed)
    profiles = [load_device(n) for n in known_devices()]
    radios = [load_radio(n) for n in known_radios()]
    return Fleet(
        device_profiles=profiles,
        radios=radios,
        device_index=rng.integers(0, len(profiles), t.devices),
        radio_index=rng.integers(0, len(radios), t.devices),
        edge_of_device=np.arange(t.devices) % t.edge_nodes,
        server_of_edge=np.arange(t.edge_nodes) % t.servers,
    )


def device_max_split(manifest: Manifest) -> int:
    return max(manifest.n_blocks - 2, 0)


def strategy_splits(
    strategy: str, manifest: Manifest, fleet: Fleet, n_images: int, rng: np.random.Generator
) -> np.ndarray:
    """Split per (device, image): devices × n_images."""
    devices = len(fleet.device_index)
    hi = device_max_split(manifest)
    if strategy in ECD_WEIGHTS:
        w_e, w_p = ECD_WEIGHTS[strategy]
        per_device = decide_splits(
            manifest, fleet.device_profiles, fleet.radios, fleet.device_index, fleet.radio_index,
            np.full(devices, w_e), np.full(devices, w_p), np.zeros(devices, dtype=int), max_split=hi,
        )
    elif strategy == "average":
        per_device = np.full(devices, hi // 2)
    elif strategy == "max":
        per_device = np.full(devices, hi)
    elif strategy == "raw":
        per_device = np.zeros(devices, dtype=int)
    elif strategy == "random":
        return rng.integers(0, hi + 1, (devices, n_images))
    else:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return np.repeat(per_device[:, None], n_images, axis=1)


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    data_mb: float
    device_energy_j: float  # all devices together
    similarity: float  # mean P_priv of what was uploaded
    efficiency: float  # Σ (1 − P_priv) per device joule
    load_macs: dict[str, np.ndarray]  # "server" / "edge" / "device" -> MACs per node


def simulate(
    manifest: Manifest,
    strategy: str,
    data_mb: float,
    fleet: Fleet,
    topology: Topology,
    seed: int = 0,
) -> StrategyResult:
    p = privacy_curve(manifest)
    raw_bytes = manifest.activation_bytes(0)
    n_images = max(int(data_mb * 2**20 // raw_bytes), 1)
    rng = np.random.default_rng(seed)
    splits = strategy_splits(strategy, manifest, fleet, n_images, rng)  # devices × images

    comp = np.stack([compute_energy(manifest, d) for d in fleet.device_profiles])[fleet.device_index]
    per_bit = np.stack([comm_energy(manifest, r) - r.joules_per_transfer for r in fleet.radios])[fleet.radio_index]
    tail = np.array([r.joules_per_transfer for r in fleet.radios])[fleet.radio_index]
    rows = np.arange(len(splits))[:, None]
    energy = (comp[rows, splits] + per_bit[rows, splits]).sum() + tail.sum()
    similarity = float(p[splits].mean())
    efficiency = float((1.0 - p[splits]).sum() / energy)

    cum_macs = np.concatenate([[0], np.cumsum([b.macs for b in manifest.blocks])]).astype(np.float64)
    edge_to = manifest.n_blocks - 1
    device_macs = cum_macs[splits].sum(axis=1)
    edge_end = np.maximum(splits, edge_to) if strategy != "raw" else splits
    edge_per_device = (cum_macs[edge_end] - cum_macs[splits]).sum(axis=1)
    cloud_per_device = (cum_macs[-1] - cum_macs[edge_end]).sum(axis=1)
    edge_macs = np.bincount(fleet.edge_of_device, weights=edge_per_device, minlength=topology.edge_nodes)
    server_of_device = fleet.server_of_edge[fleet.edge_of_device]
    server_macs = np.bincount(server_of_device, weights=cloud_per_device, minlength=topology.servers)
    return StrategyResult(
        strategy, float(data_mb), float(energy), similarity, efficiency,
        {"server": server_macs, "edge": edge_macs, "device": device_macs},
    )


def load_shares(result: StrategyResult) -> dict[str, float]:
    """Each tier's share of all the MACs computed ("server", "edge", "device"; they sum to 1)."""
    totals = {tier: float(v.sum()) for tier, v in result.load_macs.items()}
    whole = sum(totals.values())
    return {tier: (t / whole if whole else 0.0) for tier, t in totals.items()}


def summary_rows(results: list[StrategyResult], data_mb: float | None = None) -> list[dict]:
    """One row per strategy at ``data_mb`` (default: the largest size simulated): device energy,
    similarity, privacy-protection efficiency and each tier's share of the MACs."""
    data_mb = max(r.data_mb for r in results) if data_mb is None else data_mb
    return [
        {"strategy": r.strategy, "data_mb": r.data_mb, "device_energy_j": r.device_energy_j, "similarity": r.similarity,
         "efficiency": r.efficiency, **{f"{tier}_share": v for tier, v in load_shares(r).items()}}
        for r in results if r.data_mb == data_mb
    ]


def run_simulation(
    manifest: Manifest,
    out_dir: Path,
    topology: Topology = Topology(),
    data_sizes_mb: tuple[float, ...] = DATA_SIZES_MB,
    progress: Callable[[], None] | None = None,
) -> list[StrategyResult]:
    """Every strategy at every data size; writes ``ecd_simulation.csv``, ``ecd_load.csv`` and PNGs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fleet = make_fleet(topology)
    results = []
    for data_mb in data_sizes_mb:
        for strategy in STRATEGIES:
            results.append(simulate(manifest, strategy, data_mb, fleet, topology, seed=topology.seed))
            if progress:
                progress()
    with open(out_dir / "ecd_simulation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "data_mb_per_device", "device_energy_j", "similarity", "privacy_efficiency_per_j"])
        for r in results:
            w.writerow([r.strategy, r.data_mb, f"{r.device_energy_j:.6g}", f"{r.similarity:.4f}", f"{r.efficiency:.6g}"])
    largest = [r for r in results if r.data_mb == max(data_sizes_mb)]
    with open(out_dir / "ecd_load.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "tier", "node", "macs"])
        for r in largest:
            for tier, loads in r.load_macs.items():
                for i, v in enumerate(loads):
                    w.writerow([r.strategy, tier, i, f"{v:.6g}"])
    plot_simulation(results, out_dir, manifest.model_id)
    return results


def plot_simulation(results: list[StrategyResult], out_dir: Path, model_id: str) -> None:
    from research.plots import _pyplot

    plt = _pyplot()
    sizes = sorted({r.data_mb for r in results})
    by = {(r.strategy, r.data_mb): r for r in results}

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in STRATEGIES:
        ax.plot(sizes, [by[s, d].device_energy_j for d in sizes], "o-", label=s)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("captured data per device (MB)")
    ax.set_ylabel("device energy, 100 devices (J)")
    ax.set_title(f"Fig. 6 analogue: device energy ({model_id})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "fig6_energy.png", dpi=110)
    plt.close(fig)

    largest = max(sizes)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(STRATEGIES, [by[s, largest].similarity for s in STRATEGIES])
    a.set_ylabel("mean similarity of uploaded data (SSIM)")
    a.set_title("Fig. 7a analogue: output similarity (lower = more private)", fontsize=9)
    b.bar(STRATEGIES, [by[s, largest].efficiency for s in STRATEGIES])
    b.set_ylabel("privacy protection per joule (1/J)")
    b.set_title("Fig. 7b analogue: privacy-protection efficiency", fontsize=9)
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "fig7_privacy.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, s in zip(axes, ("raw", "ecd_privacy")):
        r = by[s, largest]
        loads = np.concatenate([r.load_macs["server"], r.load_macs["edge"], r.load_macs["device"]])
        colours = ["tab:red"] * len(r.load_macs["server"]) + ["tab:orange"] * len(r.load_macs["edge"]) + ["tab:blue"] * len(r.load_macs["device"])
        ax.bar(range(len(loads)), loads / 1e9, color=colours, width=1.0)
        share = load_shares(r)
        ax.set_title(f"{s}: servers {share['server']:.0%}, edges {share['edge']:.0%}, devices {share['device']:.0%} of MACs", fontsize=8)
        ax.set_xlabel("node (2 servers | 10 edge nodes | 100 devices)")
    axes[0].set_ylabel("computing load (GMAC)")
    fig.suptitle("Fig. 8 analogue: computing load per node", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "fig8_load.png", dpi=110)
    plt.close(fig)
