"""testbed.png: per link profile, each policy's mean latency and uplink bytes per frame (paper 000's
Fig. 5 axes: traffic and latency against raw upload), and the drop scenario's split over time."""

from __future__ import annotations

from pathlib import Path


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = {name: aggregate(runs) for name, runs in result.get("profiles", {}).items()}
    fig, axes = plt.subplots(2, max(1, len(profiles)), figsize=(4.5 * max(1, len(profiles)), 7), squeeze=False)
    for col, (name, rows) in enumerate(profiles.items()):
        rows = [r for r in rows if r.get("frames")]
        labels = [r["policy"] for r in rows]
        axes[0][col].barh(labels, [1e3 * r.get("latency_mean_s", float("nan")) for r in rows], color="tab:blue")
        axes[0][col].set_title(f"{name}: mean latency (ms)")
        axes[1][col].barh(labels, [r.get("uplink_bytes_per_frame", 0) for r in rows], color="tab:orange")
        axes[1][col].set_xscale("log")
        axes[1][col].set_title(f"{name}: uplink bytes per frame")
        for ax in (axes[0][col], axes[1][col]):
            ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{result.get('model')} on the shaped testbed, {result.get('fps')} frames/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per policy: the median over its repeats of each figure (``repeats``: how many)."""
    import statistics

    out: dict[str, dict] = {}
    for r in runs:
        row = out.setdefault(r["policy"], {**r, "runs": []})
        row["runs"].append(r)
    for row in out.values():
        done = [r for r in row["runs"] if r.get("frames")]
        row["repeats"] = len(row["runs"])
        for key in ("latency_p50_s", "latency_p95_s", "latency_mean_s", "uplink_bytes_per_frame", "energy_per_frame_j"):
            values = [r[key] for r in done if r.get(key) is not None]
            row[key] = statistics.median(values) if values else float("nan")
        row["frames"] = sum(r.get("frames", 0) for r in done)
        row["split_changes"] = [c for r in done for c in r.get("split_changes", [])]
        row.pop("runs")
    return list(out.values())


def tables(result: dict) -> str:
    """The docs' tables (markdown) from testbed.json: per profile and policy, and the drop."""
    lines = [f"model {result.get('model')}, {result.get('fps')} frames/s, {result.get('frames')} frames a run, "
             f"{result.get('repeats', 1)} run(s) of each policy (medians); raw image {result.get('bytes_per_split', [0])[0]} B", "",
             "| profile | policy | split | p50 ms | p95 ms | mean ms | uplink B/frame | uplink ÷ raw upload | device mJ/frame (model) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in result.get("profiles", {}).items():
        rows = aggregate(runs)
        raw = next((r for r in rows if r["policy"] == "cloud-only" and r.get("frames")), None)
        for r in rows:
            if not r.get("frames"):
                lines.append(f"| {name} | {r['policy']} | — | {r.get('problem', 'no frames')} | | | | | |")
                continue
            split = str(r["split_device"])
            if r.get("split_changes"):  # over every repeat
                split = ", ".join(f"{c['from']} → {c['to']}" for c in r["split_changes"])
            ratio = r["uplink_bytes_per_frame"] / raw["uplink_bytes_per_frame"] if raw and raw.get("uplink_bytes_per_frame") else float("nan")
            lines.append(f"| {name} | {r['policy']} | {split} | {1e3 * r['latency_p50_s']:.1f} | {1e3 * r['latency_p95_s']:.1f} | "
                         f"{1e3 * r['latency_mean_s']:.1f} | {r['uplink_bytes_per_frame']:.0f} | {ratio:.3g} | "
                         f"{1e3 * r.get('energy_per_frame_j', float('nan')):.2f} |")
    drop = result.get("drop") or []
    if drop:
        lines += ["", "| frames/s, 50 → Mbit/s | agent | split changes (frame: from → to, reason) | re-split after the drop "
                  "| mean ms | frames | took s | lost | duplicated |", "|---|---|---|---|---|---|---|---|---|"]
        for r in drop:
            changes = ", ".join(f"{c['frame']}: {c['from']} → {c['to']} ({c['reason']})" for c in r.get("split_changes", [])) or "none"
            after = [c["t_s"] - r["drop_at_s"] for c in r.get("resplit_log", [])]
            when = ", ".join(f"{t:+.1f} s" for t in after) or "—"
            lines.append(f"| {r.get('drop_fps', 130):g}, {r.get('drop_to_mbps', 1):g} | {r['policy']} | {changes} | {when} | "
                         f"{1e3 * r.get('latency_mean_s', float('nan')):.1f} | {r.get('frames')} | {r.get('run_s', float('nan')):.1f} | "
                         f"{r.get('lost')} | {r.get('duplicates_dropped')} |")
    return "\n".join(lines)
