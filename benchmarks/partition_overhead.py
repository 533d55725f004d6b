"""What chaining one onnxruntime session per block costs against one fused graph.

A ``Partition`` runs each block as its own session. This measures, side by side in one run, the
median latency of the chained blocks and of the same blocks merged into one ONNX graph
(``onnx.compose``), and prints the ratio. Needs the ``models`` extra (onnx) for the merge.

    python benchmarks/partition_overhead.py [--model digits_cnn] [--batch 1] [--runs 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import compose

from ecd.partition import Partition, SessionConfig
from ecd.zoo import load_manifest


def fused_session(manifest, config: SessionConfig) -> ort.InferenceSession:
    merged = None
    for i, block in enumerate(manifest.blocks):
        proto = onnx.load(manifest.block_path(block))
        proto = compose.add_prefix(proto, prefix=f"b{i}_")
        if merged is None:
            merged = proto
        else:
            merged = compose.merge_models(merged, proto, io_map=[(merged.graph.output[0].name, proto.graph.input[0].name)])
    return ort.InferenceSession(merged.SerializeToString(), config.session_options(), providers=["CPUExecutionProvider"])


def median_seconds(fn, runs: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    manifest = load_manifest(args.model)
    config = SessionConfig()
    x = np.random.default_rng(0).standard_normal((args.batch, *manifest.input.shape)).astype(np.float32)
    chained = Partition(manifest, 0, manifest.n_blocks, config)
    fused = fused_session(manifest, config)
    in_name, out_name = fused.get_inputs()[0].name, fused.get_outputs()[0].name
    assert np.allclose(chained.run(x), fused.run([out_name], {in_name: x})[0], rtol=1e-4, atol=1e-5)

    t_chain = median_seconds(lambda: chained.run(x), args.runs)
    t_fused = median_seconds(lambda: fused.run([out_name], {in_name: x}), args.runs)
    per_boundary = (t_chain - t_fused) / max(manifest.n_blocks - 1, 1)
    print(f"model {manifest.model_id} ({manifest.n_blocks} blocks), batch {args.batch}, median of {args.runs} runs")
    print(f"  chained per-block sessions : {t_chain * 1e3:9.3f} ms")
    print(f"  one fused session          : {t_fused * 1e3:9.3f} ms")
    print(f"  ratio chained / fused      : {t_chain / t_fused:9.3f}")
    print(f"  overhead per block boundary: {per_boundary * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
