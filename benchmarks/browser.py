"""The device page against the Python device agent (issue 33): frames/s, per-frame latency and bytes
up per frame, on the same machine, the same model, split and encoding, through the same cloud and
edge node (in this process, mutual TLS between them; the page's session over HTTPS/WebSocket, the
agent's stream over mutual-TLS gRPC).

* The page: headless Chromium, its fake camera playing held-out digits, ``--window`` frames in
  flight; after ``--warmup`` answers, the next ``--frames`` answers are timed in the page itself
  (``performance.now()`` when each result arrives). Latency: from the frame's bytes handed to the
  socket (after capture and blocks [0, split)) to its result — the Python agent's definition too.
* The Python agent (``device_agent.agent.DeviceAgent``, a device certificate), pinned to the split the
  cloud decided for the page, ``--window`` frames in flight, the same held-out digits: ``--frames``
  frames timed after ``--warmup``.
* Bytes up per frame: the whole message on the wire (the page's complete ``Frame``; the agent's
  compact revision-2 frames), from the edge's ``ecd_hop_bytes_total{hop="device_to_edge"}``.

    python benchmarks/browser.py [--frames 300] [--window 4] [--encoding float16] [--split 3] [--json out.json] [--screenshot docs/device_page_browser.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))

from browser_tiers import CHROMIUM, DRIVER, chromium, start_browser_tiers, stop_browser_tiers, wait_for, write_y4m  # noqa: E402

from ecd import zoo  # noqa: E402


def hop_bytes(tiers) -> float:
    return tiers.edge.metrics.hop_bytes.labels("edge", "device_to_edge")._value.get()


def run_page(tiers, tmp: Path, args) -> dict:
    video = tmp / "digits.y4m"
    write_y4m(video, np.load(zoo.model_dir("digits_cnn") / "heldout.npz")["images"][:24])
    driver = chromium(tmp, tiers, video, size="390,844")  # a phone's CSS pixels, for the screenshot
    try:
        driver.get(f"{tiers.page_url}?code={tiers.code()}&debug=1&fps=1000&window={args.window}")
        wait_for(driver, "return document.getElementById('state').dataset.state === 'NOT_ENROLLED'", "the enrol form")
        driver.execute_script(f"document.getElementById('min_split').value = {args.min_split};"
                              f"document.getElementById('split').value = {args.split};"
                              f"document.getElementById('encoding').value = '{args.encoding}'")
        driver.find_element("css selector", "#enrol button").click()
        wait_for(driver, f"return window.ecdPage.answered >= {args.warmup}", "the warm-up")
        before = hop_bytes(tiers), driver.execute_script("return window.ecdDebug.frames.size")
        wait_for(driver, f"return window.ecdPage.answered >= {args.warmup + args.frames}", "the timed frames", 600)
        results = driver.execute_script(f"return window.ecdDebug.results.slice({args.warmup}, {args.warmup + args.frames})"
                                        ".map(r => [r.at, r.latencyMs, r.splitDevice, !!r.error])")
        sent = driver.execute_script("return window.ecdDebug.frames.size") - before[1]
        up = (hop_bytes(tiers) - before[0]) / max(sent, 1)
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
    finally:
        driver.quit()
    at = np.array([r[0] for r in results])
    latency = np.array([r[1] for r in results])
    return {"split": results[0][2], "errors": sum(r[3] for r in results), "frames": len(results),
            "fps": (len(at) - 1) / ((at[-1] - at[0]) / 1e3), "p50_ms": float(np.percentile(latency, 50)),
            "p95_ms": float(np.percentile(latency, 95)), "bytes_up_per_frame": up}


def run_agent(tiers, tmp: Path, args, split: int) -> dict:
    from device_agent.agent import AgentConfig, DeviceAgent
    from device_agent.sources import open_source

    agent = DeviceAgent(AgentConfig(cloud=f"127.0.0.1:{tiers.cloud.port}", model_dir=str(tmp / "agent-models"), split=split,
                                    min_split=args.min_split, encoding=args.encoding, max_in_flight=args.window, frames=0,
                                    tls_dir=str(tiers.folder), tls_name="device-1", follow=False))
    agent.connect()
    agent.run(open_source("heldout", "digits_cnn", agent.manifest.input, args.warmup))
    before = hop_bytes(tiers)
    t0 = time.perf_counter()
    outcomes = agent.run(open_source("heldout", "digits_cnn", agent.manifest.input, args.frames))
    seconds = time.perf_counter() - t0
    report = agent.core.report(outcomes)
    agent.close()
    return {"split": report.split_device, "errors": report.errors, "frames": report.frames, "fps": report.frames / seconds,
            "p50_ms": report.latency_p50_s * 1e3, "p95_ms": report.latency_p95_s * 1e3,
            "bytes_up_per_frame": (hop_bytes(tiers) - before) / max(report.frames, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--window", type=int, default=4, help="frames in flight, both")
    parser.add_argument("--encoding", default="float16")
    parser.add_argument("--min-split", type=int, default=0, help="the page's privacy floor")
    parser.add_argument("--split", type=int, default=3, help="the split both run (-1: the one the cloud decides for the page)")
    parser.add_argument("--json", default="")
    parser.add_argument("--screenshot", default="", help="save the page as it streams (docs/device_page_browser.png)")
    args = parser.parse_args(argv)
    if CHROMIUM is None or DRIVER is None:
        print("needs Chromium and chromedriver", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ecd-bench-browser-") as tmp:
        tiers = start_browser_tiers(Path(tmp))
        try:
            page = run_page(tiers, Path(tmp), args)
            agent = run_agent(tiers, Path(tmp), args, page["split"])
        finally:
            stop_browser_tiers(tiers)
        if args.json:
            Path(args.json).write_text(json.dumps({"page": page, "agent": agent, "args": vars(args)}, indent=2))
        print(f"digits_cnn, split {page['split']}, {args.encoding}, {args.window} frames in flight, {args.frames} frames timed")
        print("| device | frames/s | p50 ms | p95 ms | bytes up per frame | errors |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in (("headless Chromium (onnxruntime-web, wasm, 1 thread)", page), ("Python agent (onnxruntime)", agent)):
            print(f"| {name} | {r['fps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['bytes_up_per_frame']:.0f} | {r['errors']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
