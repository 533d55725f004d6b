"""The ``ecd`` command line.

Library code raises :class:`~ecd.errors.EcdError`; this entry point prints its message (no
traceback) and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ecd.errors import ConfigError, EcdError, MissingExtraError
from ecd.manifest import Manifest

EXIT_ERROR = 2  # bad input or environment
EXIT_CHECK_FAILED = 1  # the run worked and found a mismatch

log = logging.getLogger("ecd")


# --- formatting ----------------------------------------------------------------------------------


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


# --- commands ------------------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    from ecd import zoo
    from models.registry import REGISTRY

    rows = []
    for name, entry in sorted(REGISTRY.items()):
        try:
            m = zoo.load_manifest(name)
            state = f"built ({m.version}) in {m.directory}"
        except EcdError:
            state = "not built"
        rows.append([name, "yes" if entry.bundled else "no", state, entry.description])
    print_table(["model", "bundled", "state", "description"], rows)
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    from ecd import zoo

    out = Path(args.out) if args.out else zoo.model_dir(args.name)
    try:
        from models.definition import build_model
    except ImportError as e:
        raise MissingExtraError(
            f"building models needs torch ({e.name} is not installed): pip install 'ecd-runtime[models]'"
        ) from None
    manifest, _ = build_model(
        args.name, out, weights=args.weights, seed=args.seed, input_size=args.input_size
    )
    print(f"built {manifest.model_id} version {manifest.version}: {manifest.n_blocks} blocks in {out}")
    if manifest.training and "heldout_accuracy" in manifest.training:
        print(f"held-out accuracy: {manifest.training['heldout_accuracy']:.4f}")
    return 0


def cmd_models_inspect(args: argparse.Namespace) -> int:
    from ecd import zoo

    manifest = zoo.load_manifest(args.name)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return 0
    print(f"{manifest.model_id} version {manifest.version} — {manifest.description}")
    print(f"input: {fmt_shape(manifest.input.shape)} {manifest.input.dtype} {manifest.input.layout}, "
          f"x = (pixel * {manifest.input.pixel_scale:.6g} - mean {list(manifest.input.mean)}) / std "
          f"{list(manifest.input.std)}; {len(manifest.labels)} classes")
    if manifest.training:
        print("training: " + ", ".join(f"{k}={v}" for k, v in manifest.training.items()))
    if manifest.privacy:
        curve = ", ".join(f"{v:.3f}" for v in manifest.privacy["curve"])
        print(f"privacy P_priv(b), b = 0..{manifest.n_blocks}: {curve}")
    else:
        print("privacy: not measured (ecd models privacy NAME)")
    block_table(manifest)
    return 0


def cmd_models_privacy(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace

    from ecd import zoo

    manifest = zoo.load_manifest(args.name)
    try:
        from tqdm import tqdm

        from models.measure_privacy import measure_privacy, plot_reconstructions
        from models.privacy import QUICK, AttackSettings
    except ImportError as e:
        raise MissingExtraError(
            f"measuring privacy needs torch ({e.name} is not installed): pip install 'ecd-runtime[models]'"
        ) from None
    settings = QUICK if args.quick else AttackSettings()
    if args.images is not None:
        if args.images < 1:
            raise ConfigError(f"--images: expected >= 1, got {args.images}")
        settings = replace(settings, n_images=args.images)
    settings = replace(settings, seed=args.seed)
    start = time.perf_counter()
    with tqdm(total=manifest.n_blocks + 1, desc=f"attacks on {manifest.model_id}", unit="split") as bar:
        updated, results, images = measure_privacy(manifest, settings, progress=lambda b: bar.update(1))
    elapsed = time.perf_counter() - start
    rows = [
        [r.split, f"{r.whitebox_ssim:.3f}", f"{r.decoder_ssim:.3f}", f"{r.p_priv:.3f}",
         "-" if r.whitebox_psnr is None else f"{r.whitebox_psnr:.1f}",
         "-" if r.decoder_psnr is None else f"{r.decoder_psnr:.1f}"]
        for r in results
    ]
    print_table(["b", "white-box SSIM", "decoder SSIM", "P_priv", "white-box PSNR dB", "decoder PSNR dB"], rows)
    baseline = updated.privacy.get("label_only_baseline_ssim")
    if baseline is not None:
        print(f"label-only baseline (SSIM of each image vs its class's mean attacker image): {baseline:.3f}")
    below = updated.privacy["first_split_below_unrecognisable"]
    print("falls below SSIM 0.3 (unrecognisable) at split "
          + (str(below) if below is not None else "— never, at any split"))
    print(f"{len(images.evaluation)} evaluation images; measured in {elapsed:.1f} s; written to "
          f"{updated.directory / 'manifest.json'}")
    if args.plot:
        plot_reconstructions(results, images, Path(args.plot), updated.model_id)
        print(f"picture: {args.plot}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import platform

    import psutil

    from ecd import zoo
    from ecd.profiles import DeviceProfile, MeasuredLatency, device_to_toml, load_device
    from ecd.splitcheck import time_blocks

    manifest = zoo.load_manifest(args.model)
    if args.runs < 1 or args.warmup < 0:
        raise ConfigError(f"--runs / --warmup: expected >= 1 / >= 0, got {args.runs} / {args.warmup}")
    like = load_device(args.like) if args.like else None
    active = args.active_power if args.active_power is not None else (like.cpu_active_w if like else None)
    idle = args.idle_power if args.idle_power is not None else (like.cpu_idle_w if like else None)
    if active is None or idle is None:
        raise ConfigError("--active-power / --idle-power: give both in watts, or --like PROFILE to take them from a shipped profile")
    latencies = time_blocks(manifest, runs=args.runs, warmup=args.warmup)
    total_macs = sum(b.macs for b in manifest.blocks)
    name = args.name or platform.node() or "local"
    profile = DeviceProfile(
        name=name,
        description=f"measured on {platform.node()} ({platform.machine()}, {psutil.cpu_count()} CPUs)",
        ram_mb=int(psutil.virtual_memory().total // 2**20),
        cpu_idle_w=float(idle),
        cpu_active_w=float(active),
        # measured throughput over this model's blocks, at the given active power
        joules_per_mac=float(active) * sum(latencies) / max(total_macs, 1),
        measured={manifest.model_id: MeasuredLatency(manifest.version, tuple(latencies))},
    )
    header = (
        f"Written by `ecd profile --model {manifest.model_id}` ({args.runs} timed runs per block, median, batch 1).\n"
        f"Power: {'from the shipped profile ' + args.like if args.like and args.active_power is None else 'given on the command line'}.\n"
        f"joules_per_mac = active power x measured seconds / MACs over {manifest.model_id}'s blocks."
    )
    out = Path(args.out)
    out.write_text(device_to_toml(profile, header))
    block_table(manifest, latencies)
    print(f"throughput {total_macs / sum(latencies) / 1e9:.2f} GMAC/s; profile {name!r} written to {out}")
    return 0


def _privacy_weights(args: argparse.Namespace) -> tuple[float, float]:
    w_p = args.privacy_weight
    if args.energy_weight is not None:
        return args.energy_weight, w_p
    if not (0.0 <= w_p <= 1.0):
        raise ConfigError(f"--privacy-weight: without --energy-weight it must lie in [0, 1], got {w_p}")
    return 1.0 - w_p, w_p


def cmd_split(args: argparse.Namespace) -> int:
    from ecd import zoo
    from ecd.profiles import load_device, load_radio
    from ecd.split import Preferences, decide_split

    manifest = zoo.load_manifest(args.model)
    device = load_device(args.profile)
    radio = load_radio(args.radio)
    w_e, w_p = _privacy_weights(args)
    prefs = Preferences(w_energy=w_e, w_privacy=w_p, min_split=args.min_split)
    decision = decide_split(manifest, device, radio, prefs, encoding=args.encoding, max_split=args.max_split)
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print(f"{manifest.model_id}@{manifest.version} on {device.name} over {radio.name}, {args.encoding}; "
              f"w_energy {prefs.w_energy:.3f}, w_privacy {prefs.w_privacy:.3f}, min_split {prefs.min_split}; "
              f"E_comp from {decision.compute_source}")
        rows = []
        for b in range(manifest.n_blocks + 1):
            cand = np.isfinite(decision.utility[b])
            rows.append([
                b, int(decision.bytes_sent[b]), f"{decision.e_comp[b]:.3e}", f"{decision.e_comm[b]:.3e}",
                f"{decision.energy_norm[b]:.3f}", f"{decision.p_priv[b]:.3f}",
                f"{decision.utility[b]:.4f}" if cand else "(floor)" if b < prefs.min_split else "(max)",
                "<- recommended" if b == decision.recommended else "",
            ])
        print_table(["b", "bytes", "E_comp J", "E_comm J", "E_hat", "P_priv", "U", ""], rows)
        print(f"recommended split: {decision.recommended} (device runs blocks [0, {decision.recommended}))")
    if args.plot:
        from ecd.split_plot import plot_split_curves

        plot_split_curves(manifest, device, radio, prefs, Path(args.plot), encoding=args.encoding, max_split=args.max_split)
        print(f"plot: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_simulate_ecd(args: argparse.Namespace) -> int:
    from ecd import zoo
    from ecd.simulation import DATA_SIZES_MB, STRATEGIES, Topology, run_simulation

    manifest = zoo.load_manifest(args.model)
    topology = Topology(seed=args.seed)
    total = len(DATA_SIZES_MB) * len(STRATEGIES)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        print(f"\r[{'#' * (20 * done // total):<20}] {done}/{total} runs", end="", file=sys.stderr, flush=True)

    results = run_simulation(manifest, Path(args.out), topology, progress=tick)
    print(file=sys.stderr)
    largest = max(DATA_SIZES_MB)
    rows = []
    for r in results:
        if r.data_mb == largest:
            shares = {k: v.sum() for k, v in r.load_macs.items()}
            total_macs = sum(shares.values())
            rows.append([r.strategy, f"{r.device_energy_j:.4g}", f"{r.similarity:.3f}", f"{r.efficiency:.4g}",
                         f"{shares['server'] / total_macs:.0%}", f"{shares['edge'] / total_macs:.0%}",
                         f"{shares['device'] / total_macs:.0%}"])
    print(f"{topology.servers} servers, {topology.edge_nodes} edge nodes, {topology.devices} devices; "
          f"{manifest.model_id}; {largest} MB captured per device; seed {args.seed}")
    print_table(["strategy", "device energy J", "similarity", "protection/J", "server MACs", "edge MACs", "device MACs"], rows)
    print(f"wrote ecd_simulation.csv, ecd_load.csv, fig6_energy.png, fig7_privacy.png, fig8_load.png to {args.out}")
    return 0


async def _serve(start, service: str, grace_s: float) -> None:
    """Start a service, print one READY line (JSON, with the bound ports), serve until SIGTERM."""
    from ecd.rpc import install_signal_handlers

    stop = asyncio.Event()
    install_signal_handlers(stop)
    running = await start
    ready = {"ready": service, "port": running.port, "metrics_port": running.metrics_port}
    if hasattr(running, "edge_id"):
        ready["edge_id"] = running.edge_id
    print(json.dumps(ready), flush=True)
    await stop.wait()
    log.info("[%s] SIGTERM: stopping (grace %.1f s)", service, grace_s)
    await running.stop(grace_s)


def cmd_cloud_server(args: argparse.Namespace) -> int:
    from cloud_server.service import CloudConfig, start_cloud
    from ecd.config import resolve

    cfg = resolve(CloudConfig, args, "ECD_CLOUD_")
    asyncio.run(_serve(start_cloud(cfg), "cloud-server", cfg.grace_s))
    return 0


def cmd_edge_node(args: argparse.Namespace) -> int:
    from ecd.config import resolve
    from edge_node.service import EdgeConfig, start_edge

    cfg = resolve(EdgeConfig, args, "ECD_EDGE_")
    try:
        asyncio.run(_serve(start_edge(cfg), "edge-node", cfg.grace_s))
    except ConnectionError as e:
        raise ConfigError(str(e)) from None
    return 0


def cmd_device_agent(args: argparse.Namespace) -> int:
    import grpc

    from device_agent.agent import AgentConfig, DeviceAgent
    from device_agent.sources import open_source
    from ecd.config import resolve

    cfg = resolve(AgentConfig, args, "ECD_AGENT_")
    agent = DeviceAgent(cfg)
    try:
        agent.connect()
        if cfg.metrics_port >= 0:
            from ecd.rpc import start_metrics

            start_metrics(agent.metrics.registry, "127.0.0.1", cfg.metrics_port)
        samples = open_source(cfg.source, cfg.model, agent.manifest.input, cfg.frames)
        report = agent.report(agent.run(samples))
    except grpc.RpcError as e:
        raise ConfigError(f"{e.code().name}: {e.details()}") from None
    except grpc.FutureTimeoutError:
        raise ConfigError(f"--cloud: no cloud server answers at {cfg.cloud}") from None
    finally:
        agent.close()
    d = report.to_dict()
    if cfg.report:
        Path(cfg.report).write_text(json.dumps(d, indent=2))
    print(json.dumps(d))
    return 0 if report.errors == 0 else EXIT_CHECK_FAILED


def cmd_placement_solve(args: argparse.Namespace) -> int:
    from cloud_server.placement import read_instance, read_orlib, solve

    problem = read_orlib(args.orlib) if args.orlib else read_instance(args.instance)
    placement = solve(problem, args.method, seed=args.seed)
    if args.json:
        print(json.dumps(placement.to_dict(problem), indent=2))
    else:
        print(f"{args.method}: total cost {placement.total_cost:.3f} (facility {placement.facility_cost:.3f}, "
              f"service {placement.service_cost:.3f}); NAMES {placement.names}, avgLBSU {placement.avg_lbsu:.3f}, "
              f"avgLBSD {placement.avg_lbsd:.3f}")
        for j, types in placement.to_dict(problem)["types_per_server"].items():
            print(f"  server {j}: {', '.join(types)}")
    return 0


def cmd_experiment_placement(args: argparse.Namespace) -> int:
    from cloud_server.placement.experiment import SWEEP_METHODS, mean_table, run

    rows = run(args.data, args.out, seed=args.seed, repeats=args.repeats)
    for sweep in ("types", "servers", "users"):
        values = sorted({r["value"] for r in rows if r["sweep"] == sweep})
        print(f"\nmean total cost (TC) vs {sweep}: {values}")
        for m, ys in mean_table(rows, "TC", sweep, SWEEP_METHODS).items():
            print(f"  {m:<13} " + "  ".join(f"{y:9.1f}" for y in ys))
        for metric in ("avgLBSU", "avgLBSD"):
            t = mean_table(rows, metric, sweep, ("otacs", "ttacs"))
            print(f"  {metric:<8} otacs {' '.join(f'{y:6.2f}' for y in t['otacs'])} | ttacs {' '.join(f'{y:6.2f}' for y in t['ttacs'])}")
    print(f"\nwrote {args.out}/placement.csv and placement_{{types,servers,users}}.png")
    return 0


def _read_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--instance: no such file {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--instance: {path} is not valid JSON ({e})") from None


def cmd_allocate(args: argparse.Namespace) -> int:
    import numpy as np

    if args.problem == "tapp":
        from cloud_server.allocation import tapp
        from cloud_server.allocation.checkins import area_instance, load_areas

        if args.checkins:
            areas = load_areas(args.checkins)
            if not 0 <= args.area < len(areas):
                raise ConfigError(f"--area: expected 0..{len(areas) - 1}, got {args.area}")
            inst = area_instance(areas[args.area], args.theta, args.distribution)
        else:
            d = _read_json(args.instance)
            try:
                inst = tapp.TappInstance(np.array(d["profiles"], dtype=float), np.array(d["time_threshold"]),
                                         np.array(d["workload"]), np.asarray(d.get("theta", args.theta), dtype=float))
            except KeyError as e:
                raise ConfigError(f"--instance: missing field {e.args[0]!r}") from None
        result = tapp.allocate(inst, args.method or "tapp")
        summary = f"{result.method}: {result.dangerous} dangerous, {result.allocated} of {inst.n_participants} allocated, utility {result.utility:.3f}"
    elif args.problem == "coverage":
        from cloud_server.allocation import coverage

        if args.random:
            k, n, m = args.random
            inst = coverage.random_instance(k, n, m, seed=args.seed, rho=args.rho)
        else:
            d = _read_json(args.instance)
            try:
                inst = coverage.CoverageInstance(np.array(d["sensing_rate"], dtype=float), np.array(d["rate"], dtype=float),
                                                 np.array(d["subarea"]), int(d["n_subareas"]), float(d["task_bits"]),
                                                 float(d.get("rho", args.rho)), float(d.get("eta", 1.0)))
            except KeyError as e:
                raise ConfigError(f"--instance: missing field {e.args[0]!r}") from None
        result = coverage.allocate(inst, args.method or "proposed", seed=args.seed)
        summary = f"{result.method}: objective {result.objective:.4f}, latency {result.latency:.3f} s, coverage {result.coverage}/{inst.n_subareas}, scheduled {result.scheduled.tolist()}"
    else:
        from cloud_server.allocation import crowdpower

        d = _read_json(args.instance)
        try:
            sites = [crowdpower.Site(s["name"], tuple(s["position"]), [crowdpower.Participant(**p) for p in s.get("participants", [])]) for s in d["sites"]]
            position = tuple(d.get("event_position", (0.0, 0.0)))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"--instance: malformed site list ({e})") from None
        best, scores = crowdpower.select_site(sites, args.event, args.level, args.budget, position)
        result = crowdpower.SiteSelection(best, scores)
        summary = f"chosen: {best.site if best else 'none (no site qualifies)'}" + (f", score {best.score:.1f}, group {best.group}" if best else "")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(summary)
    return 0


def cmd_experiment_allocation(args: argparse.Namespace) -> int:
    from cloud_server.allocation import experiments

    out = args.out or f"results/{args.experiment_command}"
    if args.experiment_command == "tapp":
        rows = experiments.run_tapp(args.checkins, out)
        for dist in ("com", "uni"):
            print(f"\n{dist}-distribution: dangerous participants (utility) per area, theta {', '.join(str(t) for t in experiments.THETAS + experiments.EXTRA_THETAS)}")
            for m in experiments.TAPP_METHODS:
                for a in sorted({r['area'] for r in rows}):
                    sel = [r for r in rows if r["method"] == m and r["distribution"] == dist and r["area"] == a]
                    print(f"  {m:<9} area {a + 1}: " + " ".join("infeasible" if r["dangerous"] is None else f"{r['dangerous']:3d}({r['utility']:.2f})" for r in sel))
        red = experiments.tapp_reduction([r for r in rows if r["distribution"] == "com"])
        print(f"\nTAPP avoids {red['baseline1']:.1%} of Baseline1's and {red['baseline2']:.1%} of Baseline2's dangerous participants "
              f"for theta in [0.2, 0.4] (com-distribution; the paper reports 76.23%)")
    elif args.experiment_command == "coverage":
        rows = experiments.run_coverage(out, draws=args.draws, seed=args.seed)
        mean, worst, count = experiments.coverage_gap(rows)
        print(f"proposed / brute force over {count} draws: mean {mean:.4f}, max {worst:.4f}")
        for sweep in experiments.COVERAGE_SWEEPS:
            print(f"\nmean objective vs {sweep}")
            key = sweep
            xs = sorted({r[key] for r in rows if r["sweep"] == sweep})
            for m in experiments.COVERAGE_METHODS:
                vals = [np.mean([r["objective"] for r in rows if r["sweep"] == sweep and r["method"] == m and r[key] == x]) for x in xs]
                print(f"  {m:<12} " + " ".join(f"{x}:{v:.4f}" for x, v in zip(xs, vals)))
    else:
        res = experiments.run_crowdpower(out, seed=args.seed)
        print("participant  mean quality  reputation  outlier slots")
        for i in range(8):
            print(f"{i + 1:>11}  {res['quality'][i].mean():12.3f}  {res['reputation'][i]:10.3f}  {int(res['outliers'][i].sum()):13d}")
        for sweep in ("event", "malicious", "level"):
            chosen = {}
            for r in res["sites"]:
                if r["sweep"] == sweep:
                    chosen.setdefault(r["value"], None)
                    if r["chosen"]:
                        chosen[r["value"]] = r["site"]
            print(f"chosen site by {sweep}: " + ", ".join(f"{k}: {v or 'none'}" for k, v in chosen.items()))
    print(f"\nwrote CSV and PNG to {out}")
    return 0


def run_check(name: str, runs: int, samples: int | None) -> int:
    from ecd import zoo
    from ecd.splitcheck import RELATIVE_TOLERANCE, check_inputs, check_splits, time_blocks

    manifest = zoo.load_manifest(name)
    print(f"== {manifest.model_id} version {manifest.version}: {manifest.n_blocks} blocks ==")
    print(f"per-block table (latency: onnxruntime, batch 1, median of {runs} runs on this host)")
    block_table(manifest, time_blocks(manifest, runs=runs))
    inputs = check_inputs(manifest, samples)
    print()
    print(f"per-split check: blocks [0, b) then [b, {manifest.n_blocks}) on {len(inputs.x)} "
          f"{'held-out images' if inputs.labels is not None else 'random inputs'}, "
          f"against {inputs.reference_name} (tolerance {RELATIVE_TOLERANCE:g} relative max-abs)")
    raw = manifest.activation_bytes(0)
    results = check_splits(manifest, inputs)
    rows = []
    for r in results:
        rows.append([
            r.split, fmt_shape(r.activation_shape), fmt_bytes(r.activation_bytes),
            f"{r.activation_bytes / raw:.3f}", f"{r.rel_max_abs_diff:.2e}",
            f"{r.argmax_agreement:.4f}", "-" if r.accuracy is None else f"{r.accuracy:.4f}",
            "ok" if r.ok else "MISMATCH",
        ])
    print_table(["b", "sent tensor", "bytes/sample", "vs raw", "rel diff", "same class", "accuracy", ""], rows)
    failed = [r.split for r in results if not r.ok]
    if failed:
        print(f"FAILED at splits {failed}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    print(f"all {len(results)} split points match {inputs.reference_name}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    return run_check(args.name, args.runs, args.samples)


def cmd_demo(args: argparse.Namespace) -> int:
    from ecd.demo import run_demo

    if args.frames < 1:
        raise ConfigError(f"--frames: expected >= 1, got {args.frames}")
    from ecd.zoo import DEFAULT_MODEL

    print("== 1. the bundled model, split at every point in one process ==")
    if run_check(DEFAULT_MODEL, runs=20, samples=None) != 0:
        return EXIT_CHECK_FAILED
    print("\n== 2. three tiers on loopback: cloud server, edge node, device agents ==")
    return run_demo(frames=args.frames)


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecd", description="ECD Runtime: split inference for crowdsensing")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="cloud server, edge node and three device agents on loopback (the main job)")
    demo.add_argument("--frames", type=int, default=200, help="held-out images each device streams (default 200)")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="the model zoo: list, build, inspect, check")
    msub = models.add_subparsers(dest="models_command", required=True)
    p = msub.add_parser("list", help="known models and where they are built")
    p.set_defaults(func=cmd_models_list)

    p = msub.add_parser("build", help="(re)build a model's ONNX blocks and manifest (needs torch)")
    p.add_argument("name")
    p.add_argument("--out", help="output folder (default: the model's folder in the zoo)")
    p.add_argument("--weights", type=Path, help="a torch state_dict file; default: random (or trained, for digits_cnn)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights / training (default 0)")
    p.add_argument("--input-size", type=int, help="square input side in pixels (default: the model's)")
    p.set_defaults(func=cmd_models_build)

    p = msub.add_parser("inspect", help="print a model's manifest")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--json", action="store_true", help="the manifest as JSON")
    p.set_defaults(func=cmd_models_inspect)

    p = msub.add_parser("privacy", help="measure P_priv(b) with two model-inversion attacks (needs torch)")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--quick", action="store_true", help="small settings (for tests), not for the real curve")
    p.add_argument("--images", type=int, help="evaluation images (default 64; --quick 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write originals, reconstructions and the SSIM curve to this PNG")
    p.set_defaults(func=cmd_models_privacy)

    p = sub.add_parser("split", help="the ECD split decision for one user: per-split table and recommendation")
    p.add_argument("--model", default="digits_cnn", help="zoo name or path (default digits_cnn)")
    p.add_argument("--profile", required=True, help="device profile name or file (ecd profile writes one)")
    p.add_argument("--radio", required=True, help="wifi, lte or 5g")
    p.add_argument("--privacy-weight", type=float, required=True, help="w_privacy (lambda2); with no --energy-weight, w_energy = 1 - w_privacy")
    p.add_argument("--energy-weight", type=float, help="w_energy (lambda1); weights are normalised to sum 1")
    p.add_argument("--min-split", type=int, default=0, help="hard floor: never send anything from below this block")
    p.add_argument("--max-split", type=int, help="the last split the device may run (default: all blocks)")
    p.add_argument("--encoding", default="float32", help="float32, float16 or int8 (bytes sent)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="PNG of the curves for several privacy weights")
    p.set_defaults(func=cmd_split)

    pl = sub.add_parser("placement", help="edge-server placement (paper 003): OTACS, TTACS, baselines, exact")
    plsub = pl.add_subparsers(dest="placement_command", required=True)
    p = plsub.add_parser("solve", help="solve one instance")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--orlib", help="an OR-Library cap file (read as uncapacitated)")
    src.add_argument("--instance", help="an instance in our JSON format")
    p.add_argument("--method", default="otacs", help="otacs, ttacs, otacs_ls, lf, dis, random, apx2_standin, cmsa_standin, exact, exhaustive")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_placement_solve)

    al = sub.add_parser("allocate", help="allocation: TAPP (paper 002), coverage-aware (004), CrowdPower sites (001)")
    al.add_argument("problem", choices=["tapp", "coverage", "sites"])
    src = al.add_mutually_exclusive_group(required=True)
    src.add_argument("--instance", help="an instance file (JSON)")
    src.add_argument("--checkins", help="tapp: a check-in CSV (participants with > 30 check-ins, 3x3 grids)")
    src.add_argument("--random", type=int, nargs=3, metavar=("K", "N", "M"), help="coverage: a random channel draw")
    al.add_argument("--method", help="tapp|baseline1|baseline2|exhaustive; proposed|benchmark1..3|brute_force")
    al.add_argument("--theta", type=float, default=0.5, help="tapp: privacy threshold")
    al.add_argument("--area", type=int, default=0, help="tapp --checkins: which of the three areas")
    al.add_argument("--distribution", default="com", help="tapp --checkins: com or uni workloads")
    al.add_argument("--rho", type=float, default=0.5, help="coverage: latency weight")
    al.add_argument("--seed", type=int, default=0)
    al.add_argument("--event", default="fire", help="sites: event type")
    al.add_argument("--level", type=float, default=5.0, help="sites: required quality level (0-10)")
    al.add_argument("--budget", type=float, default=10.0, help="sites: budget for a site's group")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_allocate)

    exp = sub.add_parser("experiment", help="the papers' experiments on real data")
    expsub = exp.add_subparsers(dest="experiment_command", required=True)
    for name, helptext in (("tapp", "paper 002 on Foursquare check-ins: dangerous participants and utility vs theta"),
                           ("coverage", "paper 004: objective vs users, subbands, subareas and rho"),
                           ("crowdpower", "paper 001: data quality, reputation, outliers; site selection sweeps")):
        p = expsub.add_parser(name, help=helptext)
        p.add_argument("--checkins", default="../shared/data/foursquare_nyc/checkins.csv")
        p.add_argument("--out", help="output folder (default results/NAME)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--draws", type=int, default=100, help="coverage: channel draws per sweep point")
        p.set_defaults(func=cmd_experiment_allocation)
    p = expsub.add_parser("placement", help="paper 003's sweeps over data types, servers and users")
    p.add_argument("--data", default="../shared/data/foursquare_nyc/checkins.csv")
    p.add_argument("--out", default="results/placement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="instances per sweep point (seeds seed..seed+repeats-1)")
    p.set_defaults(func=cmd_experiment_placement)

    sim = sub.add_parser("simulate", help="the papers' simulations")
    simsub = sim.add_subparsers(dest="simulate_command", required=True)
    p = simsub.add_parser("ecd", help="paper 000 §V.B: 2 servers, 10 edge nodes, 100 devices, six strategies")
    p.add_argument("--model", default="digits_cnn")
    p.add_argument("--out", default="results/ecd_simulation", help="folder for the CSVs and PNGs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate_ecd)

    from cloud_server.service import CloudConfig
    from device_agent.agent import AgentConfig
    from ecd.config import add_arguments
    from edge_node.service import EdgeConfig

    p = sub.add_parser("cloud-server", help="run the cloud server (env: ECD_CLOUD_<OPTION>)")
    add_arguments(p, CloudConfig)
    p.set_defaults(func=cmd_cloud_server)
    p = sub.add_parser("edge-node", help="run an edge node (env: ECD_EDGE_<OPTION>)")
    add_arguments(p, EdgeConfig)
    p.set_defaults(func=cmd_edge_node)
    p = sub.add_parser("device-agent", help="run a device agent: register, stream frames, report (env: ECD_AGENT_<OPTION>)")
    add_arguments(p, AgentConfig)
    p.set_defaults(func=cmd_device_agent)

    p = sub.add_parser("profile", help="measure per-block latency here and write a device profile")
    p.add_argument("--model", default="digits_cnn")
    p.add_argument("--out", required=True, help="profile file to write (TOML)")
    p.add_argument("--name", help="profile name (default: host name)")
    p.add_argument("--like", help="take power figures from this shipped profile (e.g. pi4)")
    p.add_argument("--active-power", type=float, help="W with the CPU busy")
    p.add_argument("--idle-power", type=float, help="W idle")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.set_defaults(func=cmd_profile)

    p = msub.add_parser("check", help="per-block timing and the per-split identity check")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--runs", type=int, default=20, help="timed runs per block (default 20)")
    p.add_argument("--samples", type=int, help="how many held-out images (default: all)")
    p.set_defaults(func=cmd_models_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EcdError as e:
        print(f"ecd: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
