"""The tables ``benchmarks/pipeline.py`` prints: one row per run of a configuration (with its profile
and stage timings), the extras (TLS against plaintext, one bare gRPC hop), and the transport alone
against each model's single process. Printing only: every figure is computed elsewhere.
"""

from __future__ import annotations

import re


def header() -> None:
    print(f"\n{'split':>5} {'enc':>7} {'run':>10} | {'p50 ms':>7} {'p95 ms':>7} {'Δp50 ms':>8} | {'frames/s':>8} {'single':>7} "
          f"{'ratio':>5} | {'CPU ms/frame: agents':>20} {'edge':>6} {'cloud':>6} {'all':>6} {'single':>6} | "
          f"{'RSS MB a/e/c':>13} | {'B/frame d>e':>11} {'e>c':>6} {'raw':>5} | limit")


def _f(v: float | None, fmt: str, scale: float = 1.0) -> str:
    width = re.match(r"[+<>]?(\d*)", fmt).group(1)
    return format("-", f">{width}" if width else "") if v is None else format(v * scale, fmt)


def print_row(row: dict) -> None:
    b = row["baseline"]
    for r in row["runs"].values():
        cpu = r.get("cpu_per_frame_s") or {}
        rss = r.get("rss_mb") or {}
        lat = r["mode"] == "latency"
        label = "1 in fl." if lat else f"{r['agents']}x{r['in_flight']}" if r["agents"] > 1 else f"{r['in_flight']} in fl."
        if "problem" in r and "throughput_fps" not in r:
            print(f"{row['split']:>5} {row['encoding']:>7} {label:>10} | FAILED: {r['problem'][:160]}")
            continue
        print(f"{row['split']:>5} {row['encoding']:>7} {label:>10} | "
              f"{_f(r.get('p50_s') if lat else None, '7.3f', 1e3)} {_f(r.get('p95_s') if lat else None, '7.3f', 1e3)} "
              f"{_f(r.get('p50_minus_single_ms') if lat else None, '+8.3f')} | "
              f"{_f(r.get('throughput_fps'), '8.0f')} {_f(b.get('throughput_fps'), '7.0f')} {_f(r.get('throughput_ratio'), '5.2f')} | "
              f"{_f(cpu.get('agents'), '20.2f', 1e3)} {_f(cpu.get('edge'), '6.2f', 1e3)} {_f(cpu.get('cloud'), '6.2f', 1e3)} "
              f"{_f(cpu.get('pipeline'), '6.2f', 1e3)} {_f(b.get('cpu_per_frame_s'), '6.2f', 1e3)} | "
              f"{_f(rss.get('agents') / r['agents'] if rss.get('agents') is not None else None, '4.0f')}/{_f(rss.get('edge'), '3.0f')}/{_f(rss.get('cloud'), '3.0f'):<3} | "
              f"{_f(r.get('uplink_bytes_per_frame'), '11.0f')} {_f(r.get('edge_to_cloud_bytes_per_frame'), '6.0f')} "
              f"{_f(r.get('raw_image_bytes_per_frame'), '5.0f')} | {'' if lat else r.get('bottleneck', '')}"
              f"{'  !' + r['problem'][:100] if r.get('problem') else ''}", flush=True)
    for r in row["runs"].values():
        for tier, prof in (r.get("profile") or {}).items():
            ms = prof.get("ms_per_frame") or {}
            print(f"{'':>5} {'':>7} {'profile':>10} | {tier} CPU ms/frame by part ({prof['samples']} py-spy samples, "
                  f"{r['in_flight']} in flight): " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()), flush=True)
    stages = (row["runs"].get("latency-1x1") or {}).get("stage_mean_ms") or {}
    if stages:
        print(f"{'':>5} {'':>7} {'stages':>10} | one frame in flight, mean ms as the tiers time them: "
              + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()), flush=True)
    print(f"{'':>5} {'':>7} {'single':>10} | {b['p50_s'] * 1e3:7.3f} {b['p95_s'] * 1e3:7.3f} {'':>8} | "
          f"{b['throughput_fps']:8.0f} {'':>7} {'':>5} |", flush=True)


def print_extras(tls: list[dict], hops: list[dict]) -> None:
    if tls:
        print("\nmutual TLS on every hop vs plaintext (tiers as processes; digits_cnn, split 3, float32)")
        print(f"{'run':>10} | {'plain p50 ms':>12} {'TLS p50 ms':>10} | {'plain fps':>9} {'TLS fps':>8} {'TLS / plain':>11} | "
              f"{'CPU ms/frame plain':>18} {'TLS':>6}")
        for plain, sec in zip([r for r in tls if r.get("tls") is False], [r for r in tls if r.get("tls")]):
            label = "1 in fl." if plain["mode"] == "latency" else f"{plain['in_flight']} in fl."
            pc, sc = (plain.get("cpu_per_frame_s") or {}).get("pipeline"), (sec.get("cpu_per_frame_s") or {}).get("pipeline")
            ratio = sec["throughput_fps"] / plain["throughput_fps"] if plain.get("throughput_fps") and sec.get("throughput_fps") else None
            print(f"{label:>10} | {_f(plain.get('p50_s'), '12.3f', 1e3)} {_f(sec.get('p50_s'), '10.3f', 1e3)} | "
                  f"{_f(plain.get('throughput_fps'), '9.0f')} {_f(sec.get('throughput_fps'), '8.0f')} {_f(ratio, '11.2f')} | "
                  f"{_f(pc, '18.2f', 1e3)} {_f(sc, '6.2f', 1e3)}")
    if hops:
        print("\nper-hop transport overhead (in this process: bare loopback gRPC bidi stream, median of 200 round trips)")
        print(f"{'payload':>10} | {'one hop us':>10} {'MB/s':>8} | {'memcpy us':>9} {'hop / memcpy':>12}")
        for row in hops:
            print(f"{row['bytes']:>10} | {row['one_hop_s'] * 1e6:10.1f} {row['one_hop_mb_per_s']:8.0f} | "
                  f"{row['memory_copy_s'] * 1e6:9.1f} {row['one_hop_s'] / row['memory_copy_s']:12.0f}")


def print_floor(rows: list[dict], models: list[dict]) -> None:
    """The bare three-process gRPC chain (``_transport_floor.py``) against each model's single process."""
    print("\ntransport alone: client -> relay -> echo as three processes, grpc.aio, 1 KiB opaque payloads, no model, "
          "no parsing (an upper bound on the pipeline's frames/s and a lower bound on its CPU and latency)")
    single = {m["model"]: (m.get("baseline_reference") or {}).get(m.get("baseline_impl", "fused"), {}) for m in models}
    print(f"{'in flight':>9} | {'frames/s':>8} {'p50 ms':>7} | {'CPU ms/frame: client':>20} {'relay':>6} {'echo':>6} {'all':>6} | "
          + " ".join(f"{'/ ' + k + ' single':>22}" for k in single))
    for r in rows:
        if "problem" in r:
            print(f"  failed: {r['problem'][:200]}")
            continue
        cpu = r["cpu_per_frame_s"]
        caps = " ".join(_f(r["frames_per_s"] / b["throughput_fps"] if b.get("throughput_fps") else None, "22.2f") for b in single.values())
        print(f"{r['in_flight']:>9} | {r['frames_per_s']:8.0f} {_f(r['p50_s'], '7.3f', 1e3)} | {cpu['client'] * 1e3:20.2f} "
              f"{cpu['relay'] * 1e3:6.2f} {cpu['echo'] * 1e3:6.2f} {cpu['all'] * 1e3:6.2f} | {caps}")
