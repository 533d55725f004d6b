"""Coverage-guided fuzzing of the wire-facing code with atheris (libFuzzer for Python), beside the
property-based fuzzer of live servers (``benchmarks/fuzz.py``, hypothesis).

Three targets, each fed raw bytes that libFuzzer mutates towards new coverage of the instrumented
project code, each run in a process of its own:

* ``frame``    — what an edge node does with a device's frame before any block runs: parse the
  protobuf ``Frame``, bind it to its stream (``StreamHeader``), decode the tensor at its split
  (``codec.decode_at`` against the bundled model, UINT8 images normalised);
* ``register`` — the cloud core's ``register_device`` over a real SQLite registry, from a parsed
  ``RegisterDeviceRequest`` (names, profile TOML, preferences, sensors, position);
* ``process``  — the cloud core's data plane (``CloudCore.process``) on a parsed ``Frame`` whose
  device id and token are those of a registered device when the input asks for it, so the fuzzer
  reaches the split checks, the decoder and the heads.

The invariant: every input is parsed and refused with an :class:`~ecd.errors.EcdError` (a status
and a message naming the field) or accepted; anything else — another exception, an INTERNAL
status, a non-finite output — is a crash libFuzzer reports with the input that caused it.

atheris's protobuf-aware mutator (``atheris-libprotobuf-mutator``) has no wheel for this machine and
does not build here, so the mutation is byte-level; a dictionary of the protocol's field tags is
not needed for libFuzzer to find the message structure quickly on inputs this small.

    python benchmarks/fuzz_atheris.py [--runs 20000] [--targets frame register process] [--out results/fuzz_atheris.json]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("frame", "register", "process")


def child(target: str, runs: int, workdir: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["ecd", "cloud_server", "edge_node"]):
        import numpy as np

        from cloud_server.core import CloudCore
        from cloud_server.registry import Registry
        from ecd import codec, zoo
        from ecd.errors import EcdError, describe
        from ecd.transport import serde
        from ecd.types import StreamHeader
        from ecd.v1 import ecd_pb2 as pb

    from google.protobuf.message import DecodeError

    manifest = zoo.load_manifest(zoo.DEFAULT_MODEL)
    core = None
    if target != "frame":
        from ecd.types import EdgeRegistration

        core = CloudCore(Registry(str(Path(workdir) / "cloud.sqlite3")), [manifest], edge_timeout_s=1e9)  # the edge never dies
        core.edges.register(EdgeRegistration("127.0.0.1:1", 100.0, None, 5.0))
    known = None
    if target == "process":
        a = core.devices.register(serde.registration_from_pb(pb.RegisterDeviceRequest(
            device_name="fuzz", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
            model_id=manifest.model_id, split_device=3, encoding=pb.FLOAT32)))
        known = (a.device_id, a.token, a.model_version)

    def refused_by_name(e: BaseException) -> None:
        status, message = describe(e)
        if status == "INTERNAL":
            raise e
        if not re.match(r"^[A-Za-z_][\w.\[\]-]*(, [A-Za-z_][\w.\[\]-]*)*:", message) and not message.startswith("unknown model"):
            raise AssertionError(f"a refusal that names no field: {status}: {message!r}")

    def frame_target(data: bytes) -> None:
        try:
            msg = pb.Frame.FromString(data)
        except DecodeError:
            return
        frame = serde.frame_from_pb(msg)
        try:
            frame = StreamHeader.of(frame).complete(frame)
            x = codec.decode_at(frame.tensor, manifest, frame.split.device, 1 << 20, max_batch=8)
        except EcdError as e:
            refused_by_name(e)
            return
        if x.dtype != np.float32 or not np.isfinite(x).all():
            raise AssertionError(f"decoded to {x.dtype}, finite={bool(np.isfinite(x).all())}")

    def register_target(data: bytes) -> None:
        try:
            msg = pb.RegisterDeviceRequest.FromString(data)
        except DecodeError:
            return
        try:
            core.devices.register(serde.registration_from_pb(msg))
        except EcdError as e:
            refused_by_name(e)

    def process_target(data: bytes) -> None:
        if not data:
            return
        use_known, data = data[0] & 1, data[1:]
        try:
            msg = pb.Frame.FromString(data)
        except DecodeError:
            return
        if use_known:
            msg.device_id, msg.token, msg.model_version = known
            msg.model_id = manifest.model_id
        result = core.process(serde.frame_from_pb(msg))
        if result.error is not None:
            if result.error.status == "INTERNAL":
                raise AssertionError(f"INTERNAL: {result.error.message}")
            return
        if not all(math.isfinite(v) for v in result.output):
            raise AssertionError("a non-finite output")

    fn = {"frame": frame_target, "register": register_target, "process": process_target}[target]
    corpus = Path(workdir) / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, seed in enumerate(seeds(target, manifest, known)):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=8192", "-rss_limit_mb=2048", "-print_final_stats=1", str(corpus)], fn)
    atheris.Fuzz()


def seeds(target: str, manifest, known) -> list[bytes]:
    """Valid inputs to start from (a libFuzzer corpus): mutating a well-formed message reaches the
    checks behind the parser far sooner than random bytes do."""
    import numpy as np

    from ecd import codec
    from ecd.transport import serde
    from ecd.types import Encoding
    from ecd.v1 import ecd_pb2 as pb

    if target == "register":
        return [pb.RegisterDeviceRequest(
            device_name=f"seed-{s}", profile="pi4", radio=radio, preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5, min_split=s),
            model_id=manifest.model_id, split_device=s, encoding=pb.INT8_AFFINE, position=pb.Position(lat=40.7, lon=-73.9),
            sensors={"temperature": 7.5}).SerializeToString() for s, radio in ((0, "wifi"), (3, "lte"), (6, "5g"))]
    out = []
    device_id, token, version = known or ("dev", "tok", manifest.version)
    for split in range(manifest.n_blocks + 1):
        x = np.zeros((1, *manifest.activation_shape(split)), np.float32)
        if x.size > 2048:
            continue  # keep the seeds under max_len
        for enc in Encoding.for_activations():
            msg = pb.Frame(device_id=device_id, token=token, model_id=manifest.model_id, model_version=version, frame_id=1,
                           split_device=split, split_edge=split, protocol_revision=2,
                           tensor=serde.tensor_to_pb(codec.encode(x, enc)))
            out.append((b"\x01" if target == "process" else b"") + msg.SerializeToString())
    c, h, w = manifest.input.shape
    image = pb.Frame(device_id=device_id, token=token, model_id=manifest.model_id, model_version=version, frame_id=1,
                     protocol_revision=2, tensor=serde.tensor_to_pb(codec.encode_image(np.zeros((1, h, w, c), np.uint8))))
    out.append((b"\x01" if target == "process" else b"") + image.SerializeToString())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20000, help="inputs per target")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--out", default="")
    p.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        child(args.child, args.runs, args.workdir)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed (pip install atheris; wheels for Linux x86_64); nothing fuzzed")
        return 2
    rows = []
    for target in args.targets:
        with tempfile.TemporaryDirectory(prefix=f"ecd-atheris-{target}-") as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", target, "--runs", str(args.runs), "--workdir", tmp],
                                  cwd=tmp, capture_output=True, text=True, timeout=3600)
            seconds = time.perf_counter() - t0
            done = re.search(r"Done (\d+) runs", proc.stderr)
            cov = re.findall(r"cov: (\d+)", proc.stderr)
            crashes = sorted(p.name for p in Path(tmp).glob("crash-*"))
            row = {"target": target, "runs": int(done.group(1)) if done else None, "seconds": round(seconds, 1),
                   "coverage_edges": int(cov[-1]) if cov else None, "exit": proc.returncode, "crashes": crashes,
                   "failure": "" if proc.returncode == 0 else proc.stderr[-3000:]}
        rows.append(row)
        print(f"{target:<9} {row['runs']} inputs in {row['seconds']} s, coverage {row['coverage_edges']} edges, "
              f"exit {row['exit']}, crashes: {len(crashes)}", flush=True)
        if row["failure"]:
            print(row["failure"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
