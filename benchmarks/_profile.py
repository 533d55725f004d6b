"""Where a tier's CPU goes, for ``benchmarks/pipeline.py --profile``: py-spy (a sampling profiler
that attaches to a running process, dev extra) samples every tier during a throughput window, and
each sample is put in one bucket by the innermost frame of its stack that belongs to a known part.

Samples whose innermost frame is a thread waiting (a pool worker waiting for work, the event loop
in ``select``, a ``threading`` wait) are not counted; neither is grpc's C core on its own threads,
which py-spy does not see (the servers' Python-side gRPC work, in the event loop, is counted), nor
onnxruntime's own worker threads. ``ms/frame`` apportions the tier's CPU per frame from ``/proc``
(over the same window) by the shares of the counted samples. It is an approximation: a sample is
a thread seen running Python or native code under Python, not CPU time (a thread waiting for the
GIL is counted; onnxruntime's worker threads are not, which understates the model's part).
Protobuf parsing inside grpc's deserialiser counts as gRPC.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

# (bucket, path fragments) in priority order: the innermost frame matching any fragment decides
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("onnxruntime/",)),
    ("metrics", ("prometheus_client/",)),
    ("registry", ("cloud_server/registry.py", "sqlite3/", "psycopg/")),
    ("codec", ("ecd/codec.py",)),
    ("serde", ("ecd/transport/serde.py", "google/protobuf/")),
    ("batching", ("ecd/batching.py",)),
    ("ours", ("ecd/", "edge_node/", "cloud_server/", "device_agent/")),
    ("grpc+asyncio", ("grpc/", "asyncio/", "selectors.py", "concurrent/futures/", "threading.py", "queue.py")),
)
WAITING_LEAVES = ("_worker (concurrent/futures/thread.py", "select (selectors.py", "wait (threading.py",
                  "Thread.run (threading.py", "get (queue.py")


def available() -> str | None:
    """The py-spy executable, or None."""
    return shutil.which("py-spy") or (str(p) if (p := Path(__file__).resolve().parents[1] / ".venv/bin/py-spy").exists() else None)


RATE = 50  # samples per second per thread


def start(pid: int, seconds: float, out: Path, rate: int = RATE) -> subprocess.Popen:
    exe = available()
    assert exe, "py-spy is not installed (pip install -e '.[dev]')"
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--duration", str(max(1, round(seconds))),
                             "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def bucket_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, fragments in BUCKETS:
            if any(f in frame for f in fragments):
                return name
    return "other"


def buckets(raw: str) -> tuple[dict[str, float], int]:
    """Shares of the counted samples per bucket (py-spy's raw format: ``frame;frame;... count``)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        if frames[-1].startswith(WAITING_LEAVES):
            continue
        counts[bucket_of(frames)] += int(n)
    total = sum(counts.values())
    return ({k: v / total for k, v in counts.most_common()} if total else {}), total
