"""The pipeline benchmark's runs, for ``benchmarks/pipeline.py``: the checkout under test and its
flags, its cloud and edge started as processes, a model built if it is not, and agents started,
measured over a window and ended, for every configuration of a model and for plaintext against
mutual TLS. Every wait is bounded by a :class:`~_procs.Deadline`; every process started is ended.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

import _profile
from _counts import AgentFlags, read_report
from _metrics import metric_sum, scrape
from _pipeline_baseline import Baseline
from _pipeline_figures import (
    agent_counts,
    filter_args,
    help_flags,
    median_dict,
    per_frame,
    ratios,
    resolve_splits,
    snapshot,
    window_figures,
)
from _pipeline_report import header, print_row
from _procs import HARNESS_ROOT, Cluster, Deadline, StartError, Tier


class Checkout:
    """The checkout under test: its CLI's flags, read once from ``--help``."""

    def __init__(self, root: Path, python: str):
        self.root, self.python = root, python
        self.extra: dict[str, list[str]] = {}  # more flags per tier (--cloud-args, --edge-args, --agent-args)
        self.flags: dict[str, set[str]] = {}
        self.dropped: set[str] = set()
        for sub in ("cloud-server", "edge-node", "device-agent"):
            done = subprocess.run([python, "-m", "ecd_cli", sub, "--help"], cwd=root, capture_output=True, text=True,
                                  timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root)})
            if done.returncode != 0:
                raise SystemExit(f"`ecd {sub} --help` in {root} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            self.flags[sub] = help_flags(done.stdout)
            if sub == "device-agent":
                self.until_sigterm = AgentFlags.from_help(done.stdout).until_sigterm

    def args(self, sub: str, args: list[str]) -> list[str]:
        kept, dropped = filter_args(args, self.flags[sub])
        self.dropped.update(f"{sub} {d}" for d in dropped)
        return [sub, *kept]


def run_agents(c: Cluster, co: Checkout, cloud: Tier, edge: Tier, run: dict, opts: argparse.Namespace, logdir: Path,
               tls: list[str] | None = None) -> dict:
    """Start ``run['agents']`` agents, measure a window, end them; the window's figures and their reports.

    Every agent streams until SIGTERM. After a warm-up (``2 x agents x in-flight`` frames, at least 20)
    the window opens; ``run['mode']``: ``latency`` closes it ``--frames`` answers later, ``throughput``
    after ``--window-s`` seconds. The agents' latency percentiles are their reports' (every frame,
    the warm-up's included)."""
    deadline = Deadline(opts.run_deadline_s)
    n, k, mode = run["agents"], run["in_flight"], run["mode"]
    timed = mode == "throughput"
    frames = 0 if co.until_sigterm else 10**7  # streams until SIGTERM, which ends every run
    agents, reports = [], []
    tag = f"{run['model']}-s{run['split']}-{run['encoding']}-{mode}-{n}x{k}{'-tls' if tls else ''}-{run['rep']}"
    for i in range(n):
        report = logdir / f"{tag}-{i}.report.json"
        args = ["--cloud", cloud.target, "--name", f"bench-{i}", "--model", run["model"], "--split", str(run["split"]),
                "--encoding", run["encoding"], "--max-in-flight", str(k), "--frames", str(frames), "--source", run["source"],
                "--report", str(report), "--metrics-port", "0", "--model-dir", str(logdir / f"agent-{run['model']}-{i}"),
                *(tls or ["--insecure"]), *co.extra.get("device-agent", [])]
        agents.append(c.spawn("agent", f"{tag}-{i}", co.args("device-agent", args)))
        reports.append(report)
    groups = {"cloud": [cloud], "edge": [edge], "agents": agents}
    out: dict = {"agents": n, "in_flight": k, "mode": mode}
    try:
        c.wait_ready(agents, deadline, 120)
        warm = max(n * k * 2, 20)

        def answered() -> int:
            return sum(int(metric_sum(scrape(a.metrics_port, 2.0) or [], "ecd_frames_total", service="device")) for a in agents)

        def wait_answered(target: int, cap_s: float) -> bool:
            end = Deadline(min(cap_s, deadline.remaining()))
            while not end.expired:
                if answered() >= target:
                    return True
                if any(not a.alive for a in agents):
                    return False
                time.sleep(opts.poll_s)
            return False

        warmed = wait_answered(warm, opts.warmup_cap_s)
        if not warmed:
            raise RuntimeError(f"{tag}: {answered()} of {warm} warm-up frames answered in time; logs {logdir}")
        a = snapshot(groups)
        spies = {}
        if timed and opts.profile and n == 1 and k == opts.in_flight[0]:  # one profiled run per configuration
            spies = {name: (_profile.start(t.pid, opts.window_s, logdir / f"{tag}-{name}.pyspy"), logdir / f"{tag}-{name}.pyspy")
                     for name, t in (("agents", agents[0]), ("edge", edge), ("cloud", cloud))}
        try:
            if timed:
                time.sleep(deadline.left(opts.window_s))
            else:  # one frame in flight: --frames frames after the warm-up
                wait_answered(agent_counts(a)[0] + opts.frames, deadline.remaining())
            b = snapshot(groups)
            out.update(window_figures(a, b, opts.cores))
            if spies:
                out["profile"] = read_profiles(spies, out.get("cpu_per_frame_s") or {}, deadline)
        finally:
            for proc, _path in spies.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        for t in agents:
            c.signal(t, signal.SIGTERM)
        c.wait_exit(agents, deadline)
    finally:
        for t in agents:  # whatever happened: none outlives its run
            if t.alive:
                c.signal(t, signal.SIGKILL)
        c.wait_exit(agents, Deadline(10))
    reps = [read_reportish(p, t) for p, t in zip(reports, agents)]
    ok = [r for r in reps if r]
    frames_done = sum(int(r.get("frames", 0)) for r in ok)
    out["exit_codes"] = [t.returncode for t in agents]
    out["errors"] = sum(int(r.get("errors", 0)) for r in ok)
    out["frames_answered"] = frames_done
    out["uplink_bytes_per_frame"] = per_frame(sum(float(r.get("uplink_bytes", 0)) for r in ok), frames_done)
    out["raw_image_bytes_per_frame"] = per_frame(sum(float(r.get("raw_image_bytes", 0)) for r in ok), frames_done)
    if ok:
        out["agent_p50_s"] = float(np.median([r["latency_p50_s"] for r in ok]))
        out["agent_p95_s"] = float(np.median([r["latency_p95_s"] for r in ok]))
        dc = out.get("device_compute_mean_s") or 0.0
        out["p50_s"], out["p95_s"] = out["agent_p50_s"] + dc, out["agent_p95_s"] + dc
        out["split_edge"] = ok[0].get("split_edge")
    if any(code not in (0,) for code in out["exit_codes"]) or out["errors"]:
        out["problem"] = f"exit codes {out['exit_codes']}, {out['errors']} errors; logs {logdir}"
    return out


def read_profiles(spies: dict, cpu: dict, deadline: Deadline) -> dict:
    """Each tier's py-spy samples in parts: the shares of its counted samples, and the tier's CPU per
    frame from /proc apportioned by those shares (see ``_profile.py`` for what is not counted)."""
    out = {}
    for name, (proc, path) in spies.items():
        try:
            proc.wait(timeout=deadline.left(30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shares, samples = _profile.buckets(path.read_text()) if path.exists() else ({}, 0)
        per_frame = cpu.get(name)
        out[name] = {"samples": samples, "share": shares,
                     "ms_per_frame": {k: v * per_frame * 1e3 for k, v in shares.items()} if per_frame else None}
    return out


def read_reportish(path: Path, tier: Tier) -> dict | None:
    """The agent's ``--report`` file, else the report it printed."""
    report = read_report(path)
    return report if report is not None else tier.last_json()


def start_servers(c: Cluster, co: Checkout, logdir: Path, name: str, model: str, deadline: Deadline,
                  tls: list[str] | None = None, edge_tls: list[str] | None = None) -> tuple[Tier, Tier]:
    def start(kind: str, tier_name: str, sub: str, args: list[str]) -> Tier:
        if not tls:
            return c.start_service(kind, tier_name, co.args(sub, args), deadline)
        # over mutual TLS the harness has no client certificate: health is read on the plaintext
        # --health-port (READY alone where the checkout has no such flag)
        from ecd.transport.rpc import wait_healthy

        tier = c.spawn(kind, tier_name, co.args(sub, [*args, "--health-port", "0"]))
        c.wait_ready([tier], deadline, 60)
        health = int((tier.ready or {}).get("health_port") or -1)
        if health > 0:
            wait_healthy(f"127.0.0.1:{health}", timeout_s=max(1.0, deadline.left(60)))
        return tier

    cloud = start("cloud", f"cloud-{name}", "cloud-server",
                  ["--port", "0", "--metrics-port", "0", "--models", model, "--db", str(logdir / f"cloud-{name}.sqlite3"), *(tls or ["--insecure"]),
                   *co.extra.get("cloud-server", [])])
    edge = start("edge", f"edge-{name}", "edge-node",
                 ["--cloud", cloud.target, "--port", "0", "--metrics-port", "0", "--model-dir", str(logdir / f"edge-{name}"),
                  *(edge_tls or ["--insecure"]), *co.extra.get("edge-node", [])])
    return cloud, edge


def ensure_model(model: str, python: str, deadline: Deadline) -> str:
    """'' if the model is ready to serve, else why it cannot be. Built once into the ECD model dir if it
    is not (``ecd models build``); an agent also needs the model's privacy curve, even with a pinned
    split, so a model without one gets a quick, undefended one (``ecd models privacy --quick
    --no-defence``: it only feeds the split choice, which this benchmark pins with ``--split``)."""
    env = {**os.environ, "PYTHONPATH": str(HARNESS_ROOT)}
    code = (f"from ecd.zoo import load_manifest; m = load_manifest({model!r}); "
            "print('curve' if m.privacy and 'curve' in m.privacy else 'no curve')")
    probe = [python, "-c", code]

    def state() -> str:
        done = subprocess.run(probe, cwd=HARNESS_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        return done.stdout.strip() if done.returncode == 0 else "not built"

    steps = {"not built": ["models", "build", model], "no curve": ["models", "privacy", model, "--quick", "--no-defence"]}
    for _ in range(2):
        now = state()
        if now == "curve":
            return ""
        print(f"{model}: {now}: running `ecd {' '.join(steps[now])}` (once, into the ECD model dir) ...", flush=True)
        try:
            done = subprocess.run([python, "-m", "ecd_cli", *steps[now]], cwd=HARNESS_ROOT, env=env, capture_output=True,
                                  text=True, timeout=deadline.left(900), check=False)
        except subprocess.TimeoutExpired:
            return f"`ecd {' '.join(steps[now])}` did not finish in time"
        if done.returncode != 0:
            return f"`ecd {' '.join(steps[now])}` failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return "" if state() == "curve" else f"{model} still not ready after building it"


def model_info(model: str, python: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HARNESS_ROOT)}
    code = (f"import json; from ecd.zoo import load_manifest; m = load_manifest({model!r}); "
            "print(json.dumps({'n_blocks': m.n_blocks, 'heldout': bool(getattr(m, 'heldout', None)), 'version': m.version}))")
    done = subprocess.run([python, "-c", code], cwd=HARNESS_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_model(model: str, co: Checkout, opts: argparse.Namespace, logdir: Path, total: Deadline, into: list) -> dict:
    """Every configuration of one model; the result is in ``into`` from the start, so an interrupted
    run still writes the rows it measured."""
    info = model_info(model, opts.python)
    splits = resolve_splits(opts.splits, info["n_blocks"])
    result: dict = {"model": model, "n_blocks": info["n_blocks"], "version": info["version"], "splits": splits, "rows": []}
    into.append(result)
    base = Baseline(model, opts.python, total, logdir)
    result["baseline_info"] = base.info
    source = base.info["source"]
    try:
        ref = {impl: base.measure(impl, opts.frames, opts.window_s, total) for impl in base.info["impls"]}
        result["baseline_reference"] = ref
        print(f"\n=== {model} ({info['n_blocks']} blocks, frames: {source}); single process "
              + "; ".join(f"{k}: p50 {v['p50_s'] * 1e3:.3f} ms, {v['throughput_fps']:.0f} frames/s, "
                          f"{v['cpu_per_frame_s'] * 1e3:.2f} ms CPU/frame, RSS {v['rss_mb']:.0f} MB" for k, v in ref.items())
              + (f"\n    (fused baseline unavailable: {base.info['fuse_error']})" if base.info.get("fuse_error") else ""), flush=True)
        impl = opts.baseline if opts.baseline in base.info["impls"] else "chained"
        result["baseline_impl"] = impl
        with Cluster(co.root, co.python, logdir, sample_s=1.0, scrape_timeout_s=2.0) as c:
            cloud, edge = start_servers(c, co, logdir, model, model, total)
            header()
            for split in splits:
                for encoding in opts.encodings:
                    if total.expired:
                        result.setdefault("notes", []).append("benchmark deadline hit: later configurations skipped")
                        return result
                    runs = [{"mode": "latency", "agents": 1, "in_flight": 1}]
                    runs += [{"mode": "throughput", "agents": 1, "in_flight": k} for k in opts.in_flight]
                    runs += [{"mode": "throughput", "agents": n, "in_flight": opts.agents_in_flight} for n in opts.agents if n > 1]
                    per_run: dict[str, list[dict]] = {}
                    bases = []
                    for rep in range(opts.repeats):
                        bases.append(base.measure(impl, opts.frames, opts.window_s, total))  # side by side with its runs
                        for r in runs:
                            key = f"{r['mode']}-{r['agents']}x{r['in_flight']}"
                            spec = {**r, "model": model, "split": split, "encoding": encoding, "source": source, "rep": rep}
                            try:
                                got = run_agents(c, co, cloud, edge, spec, opts, logdir)
                            except (StartError, RuntimeError, TimeoutError) as e:
                                got = {**r, "problem": str(e)[:500]}
                            got.update(ratios(got, bases[-1]))  # against the baseline of the same repeat
                            per_run.setdefault(key, []).append(got)
                    b = median_dict(bases)
                    row = {"split": split, "encoding": encoding, "baseline": b, "runs": {}}
                    for key, got in per_run.items():
                        m = median_dict([g for g in got if "throughput_fps" in g] or got)  # medians of the ratios too
                        if len(got) > 1:
                            m["all_repeats"] = got
                        row["runs"][key] = m
                    result["rows"].append(row)
                    print_row(row)
                    if not cloud.alive or not edge.alive:
                        raise RuntimeError(f"a server exited during {model} split {split} {encoding}; logs {logdir}")
    finally:
        base.close()
    return result


def tls_cost(co: Checkout, opts: argparse.Namespace, logdir: Path, total: Deadline) -> list[dict]:
    """The pipeline in plaintext and over mutual TLS on every hop, tiers as processes, side by side."""
    certs = logdir / "tls"
    done = subprocess.run([opts.python, "-m", "ecd_cli", "certs", "init", str(certs), "--edges", "1", "--devices", "4"],
                          cwd=co.root, env={**os.environ, "PYTHONPATH": str(co.root)}, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        print(f"TLS: `ecd certs init` failed, skipped: {done.stderr.strip()[-300:]}")
        return []
    rows = []
    model = "digits_cnn"
    split = min(3, model_info(model, opts.python)["n_blocks"])
    for use_tls in (False, True):
        tls = ["--tls-dir", str(certs)] if use_tls else []
        with Cluster(co.root, co.python, logdir, sample_s=1.0, scrape_timeout_s=2.0) as c:
            cloud, edge = start_servers(c, co, logdir, f"tls{int(use_tls)}", model, total, tls, tls + (["--tls-name", "edge-1"] if tls else []))
            for mode, k in (("latency", 1), ("throughput", 16)):
                spec = {"mode": mode, "agents": 1, "in_flight": k, "model": model, "split": split, "encoding": "float32",
                        "source": "heldout", "rep": 0}
                try:
                    r = run_agents(c, co, cloud, edge, spec, opts, logdir, tls + (["--tls-name", "device-1"] if tls else []))
                except (StartError, RuntimeError, TimeoutError) as e:
                    r = {"problem": str(e)[:300]}
                rows.append({"tls": use_tls, "mode": mode, "in_flight": k, **r})
    return rows
