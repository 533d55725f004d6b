"""Tables and human-readable numbers for the CLI's output (presentation only)."""

from __future__ import annotations

import sys
from typing import Sequence

from ecd.manifest import Manifest


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], out=None) -> None:
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) if k and c[:1].isdigit() else c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)


def block_table(manifest: Manifest, latencies: Sequence[float] | None = None) -> None:
    headers = ["#", "block", "kind", "input", "output", "out bytes", "MACs", "params"]
    if latencies is not None:
        headers.append("latency ms")
    rows = []
    for b in manifest.blocks:
        row: list[object] = [
            b.index, b.name, b.kind, fmt_shape(b.input_shape), fmt_shape(b.output_shape),
            fmt_bytes(b.output_bytes_float32), fmt_count(b.macs), fmt_count(b.params),
        ]
        if latencies is not None:
            row.append(f"{latencies[b.index] * 1e3:.3f}")
        rows.append(row)
    print_table(headers, rows)

