"""Tiers as separate processes on loopback, for ``benchmarks/faults.py`` and ``benchmarks/load.py``.

Each tier is started the way an operator starts it, ``python -m ecd_cli <tier> ...``, from the
checkout named by ``root`` (so a worktree of an older commit is measured by the same harness), on
ports the OS picks and reads back from the tier's READY line. What the services do not report
themselves is taken from outside, so the numbers do not depend on the code under test:

* CPU seconds and peak RSS from ``/proc/<pid>`` (sampled) and from the child's rusage when it is
  reaped (exact, also for a process that exits between two samples);
* progress from every tier's Prometheus endpoint (frames answered; a device's frames made; an edge's
  frames computed and queued), sampled on a timer: wedges and recovery times are computed from it,
  and an agent that dies without a report is counted from its last sample;
* every stderr line, stamped with seconds since the cluster started, in one log file per tier.

Every wait is bounded by a :class:`Deadline`. :meth:`Cluster.close` ends every process it started
(SIGTERM to what still runs, then SIGKILL) and reaps it; children also get SIGKILL if the harness
itself dies (``PR_SET_PDEATHSIG``), so an interrupted benchmark leaves no process behind. Processes
are spawned from the main thread only: the death signal follows the thread that forked.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Runs in the child before the tier: die with the harness, then become `python -m ecd_cli ...`
# (same pid, same command line as an operator's).
LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"  # PR_SET_PDEATHSIG = SIGKILL
    "if os.getppid() != int(os.environ['ECD_BENCH_PARENT']): sys.exit(70)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'ecd_cli', *sys.argv[1:]])\n"
)


class StartError(RuntimeError):
    """A tier exited or stayed silent before its READY line."""


class Deadline:
    """A hard end for one scenario: every wait asks it how long it may still take."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def left(self, cap: float | None = None) -> float:
        r = self.remaining()
        return r if cap is None else min(cap, r)

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


def pace(seconds: float, deadline: Deadline) -> None:
    """Sleep to pace a scenario step (never to wait for readiness), within the deadline."""
    time.sleep(deadline.left(max(0.0, seconds)))


# --- samples and metrics -----------------------------------------------------------------------


class Sample(NamedTuple):
    """One look at a tier. ``answered``: frames it answered (ok or error); ``made``: an agent's frames
    made (sent), an edge's frames computed; ``pending``: frames an edge holds unanswered."""

    t: float
    answered: int
    made: int | None = None
    pending: int = 0
    cpu_s: float | None = None
    rss_bytes: int | None = None


Metric = tuple[str, dict[str, str], float]

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Metric]:
    """The series in a Prometheus text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            try:
                value = float(m.group(3))
            except ValueError:
                continue
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def metric_sum(metrics: Iterable[Metric], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in metrics if n == name and all(lab.get(k) == want for k, want in labels.items()))


def progress(kind: str, metrics: list[Metric]) -> tuple[int, int | None, int]:
    """(answered, made, pending) of a tier from its metrics."""
    service = {"agent": "device"}.get(kind, kind)
    answered = int(metric_sum(metrics, "ecd_frames_total", service=service))
    if kind == "agent":
        return answered, int(metric_sum(metrics, "ecd_stage_seconds_count", service="device", stage="device_compute")), 0
    if kind == "edge":
        computed = int(metric_sum(metrics, "ecd_stage_seconds_count", service="edge", stage="edge_compute"))
        ok = int(metric_sum(metrics, "ecd_frames_total", service="edge", outcome="ok"))
        queued = int(metric_sum(metrics, "ecd_queue_depth", service="edge"))
        return answered, computed, max(computed - ok, queued, 0)
    return answered, None, 0


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: ``buckets`` maps an upper bound (``inf`` included) to
    its cumulative count; linear inside a bucket, the last finite bound for the +Inf bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return prev_bound
            if count == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return prev_bound


def beyond_top(q: float, buckets: dict[float, float]) -> bool:
    """Whether quantile ``q`` falls in the +Inf bucket (its value is then only "at least the top bound")."""
    finite = [b for b in buckets if not math.isinf(b)]
    total = max(buckets.values(), default=0.0)
    return bool(finite) and total > 0 and buckets[max(finite)] < q * total


def latency_buckets(metrics: list[Metric], service: str = "device", stage: str = "end_to_end") -> dict[float, float]:
    out: dict[float, float] = {}
    for name, labels, value in metrics:
        if name == "ecd_stage_seconds_bucket" and labels.get("service") == service and labels.get("stage") == stage:
            le = float(labels["le"].replace("+Inf", "inf"))
            out[le] = out.get(le, 0.0) + value
    return out


def scrape(port: int, timeout_s: float = 1.0) -> list[Metric] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            return parse_metrics(r.read().decode())
    except (OSError, ValueError):
        return None


def read_proc(pid: int) -> tuple[float, int, int] | None:
    """(CPU seconds, RSS bytes, peak RSS bytes) from /proc; None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is the state (field 3 of proc(5))
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return cpu, int(kb.get("VmRSS", 0)) * 1024, int(kb.get("VmHWM", 0)) * 1024


# --- wedges and recovery (pure: computed from samples after the run) ----------------------------


@dataclass
class Wedge:
    """A tier alive with frames outstanding that made no progress for ``seconds``."""

    tier: str
    start_s: float
    seconds: float
    open_at_end: bool  # still wedged when the scenario ended


def flat_runs(points: Sequence[tuple[float, int, bool]], min_s: float, end_s: float | None = None) -> list[tuple[float, float, bool]]:
    """Intervals (start, end, open) where ``count`` stayed flat while ``outstanding`` held, lasting
    at least ``min_s``. ``points``: (t, count, outstanding) in time order; ``end_s``: when watching
    stopped (an interval still running then is open and ends there)."""
    runs = []
    start: float | None = None
    last_t, last_count = None, None
    for t, count, outstanding in points:
        if last_count is not None and count > last_count or not outstanding:
            if start is not None and last_t is not None and last_t - start >= min_s:
                runs.append((start, last_t, False))
            start = t if outstanding else None
        elif start is None:
            start = t
        last_t, last_count = t, count
    if start is not None and last_t is not None:
        end = max(last_t, end_s or last_t)
        if end - start >= min_s:
            runs.append((start, end, end_s is not None))
    return runs


def first_progress(samples: Sequence[Sample], after_s: float, baseline: int) -> float | None:
    """When a tier first answered more than ``baseline`` frames, after ``after_s``."""
    for s in samples:
        if s.t > after_s and s.answered > baseline:
            return s.t
    return None


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Tier:
    """One process of the cluster, and everything seen of it."""

    name: str
    kind: str  # cloud, edge or agent
    argv: list[str]
    log: Path
    proc: subprocess.Popen
    t_start: float
    ready: dict | None = None
    t_ready: float | None = None
    t_exit: float | None = None
    returncode: int | None = None
    signals: list[tuple[float, str]] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)  # the latest scrape
    cpu_s: float = 0.0
    rss_peak_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.returncode is None

    @property
    def port(self) -> int:
        return int((self.ready or {}).get("port", 0))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int:
        return int((self.ready or {}).get("metrics_port", -1))

    @property
    def answered(self) -> int:
        return self.samples[-1].answered if self.samples else 0

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def last_json(self) -> dict | None:
        """The last JSON object the tier printed that is not its READY line (an agent's report)."""
        for line in reversed(self.stdout):
            if line.startswith("{"):
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if "ready" not in d:
                    return d
        return None


class Cluster:
    """The processes of one scenario, their samples, and their end."""

    def __init__(self, root: Path, python: str, logdir: Path, sample_s: float = 0.5, scrape_timeout_s: float = 1.0):
        self.root = root
        self.python = python
        self.logdir = logdir
        self.sample_s = sample_s
        self.scrape_timeout_s = scrape_timeout_s
        self.t0 = time.monotonic()
        self.tiers: list[Tier] = []
        self.cond = threading.Condition()
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._tracker: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self.guards: list[Callable[[Tier, Sample], None]] = []  # called after every sample of a tier
        logdir.mkdir(parents=True, exist_ok=True)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- starting ------------------------------------------------------------------------------

    def spawn(self, kind: str, name: str, args: Sequence[str]) -> Tier:
        assert threading.current_thread() is threading.main_thread(), "spawn from the main thread (PR_SET_PDEATHSIG)"
        env = {**os.environ, "ECD_BENCH_PARENT": str(os.getpid()), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH", "")) if p)}
        argv = [self.python, "-c", LAUNCHER, *args]
        proc = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        tier = Tier(name, kind, [self.python, "-m", "ecd_cli", *args], self.logdir / f"{name}.log", proc, self.now())
        self.tiers.append(tier)
        for target in (self._read_stdout, self._read_stderr, self._reap):
            t = threading.Thread(target=target, args=(tier,), name=f"{target.__name__}-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return tier

    def _read_stdout(self, tier: Tier) -> None:
        for line in tier.proc.stdout:
            line = line.strip()
            tier.stdout.append(line)
            if tier.ready is None and line.startswith("{"):
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if isinstance(d, dict) and "ready" in d:
                    with self.cond:
                        tier.ready, tier.t_ready = d, self.now()
                        self.cond.notify_all()

    def _read_stderr(self, tier: Tier) -> None:
        with open(tier.log, "w") as f:
            f.write(f"# {' '.join(tier.argv[:3])} {' '.join(tier.argv[3:])}\n")
            for line in tier.proc.stderr:
                f.write(f"{self.now():9.3f} {line}")
                f.flush()

    def _reap(self, tier: Tier) -> None:
        """Wait for the exit without reaping, then reap under the tier's lock: a signal is never sent
        to a pid that has been reaped (and could be reused)."""
        os.waitid(os.P_PID, tier.pid, os.WEXITED | os.WNOWAIT)
        with tier.lock:
            _, status, ru = os.wait4(tier.pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            tier.proc.returncode = rc
            tier.cpu_s = ru.ru_utime + ru.ru_stime
            tier.rss_peak_bytes = max(tier.rss_peak_bytes, ru.ru_maxrss * 1024)
            tier.t_exit = self.now()
            tier.returncode = rc
        with self.cond:
            self.cond.notify_all()

    def wait_ready(self, tiers: Sequence[Tier], deadline: Deadline, timeout_s: float | None = None) -> None:
        """Until every tier printed READY; a tier that exits first is a :class:`StartError`."""
        with self.cond:
            ok = self.cond.wait_for(lambda: all(t.ready for t in tiers) or any(not t.alive and not t.ready for t in tiers),
                                    deadline.left(timeout_s))
        for t in tiers:
            if not t.ready:
                why = f"exited {t.returncode}" if not t.alive else "no READY line in time"
                raise StartError(f"{t.name} did not start ({why}); {t.log}:\n{t.log_tail()}")
        assert ok

    def start_service(self, kind: str, name: str, args: Sequence[str], deadline: Deadline, timeout_s: float = 60.0) -> Tier:
        """Spawn a server, read its READY line, and wait until its health service says SERVING."""
        from ecd.transport.rpc import wait_healthy

        tier = self.spawn(kind, name, args)
        self.wait_ready([tier], deadline, timeout_s)
        wait_healthy(tier.target, timeout_s=max(1.0, deadline.left(timeout_s)))
        return tier

    # --- watching ------------------------------------------------------------------------------

    def start_tracker(self) -> None:
        if self._tracker is None:
            self._tracker = threading.Thread(target=self._track, name="tracker", daemon=True)
            self._tracker.start()

    def _track(self) -> None:
        while not self._stop.wait(self.sample_s):
            self.sample()

    def sample(self, tiers: Iterable[Tier] | None = None) -> None:
        """Look at every live tier (or those given) once: /proc, then its metrics. Wakes :meth:`wait_until`."""
        with self._sample_lock:
            for tier in list(self.tiers if tiers is None else tiers):
                if tier.alive:
                    self._sample_tier(tier)
        with self.cond:
            self.cond.notify_all()

    def _sample_tier(self, tier: Tier) -> None:
        with tier.lock:  # not reaped meanwhile: the pid is still this tier's
            usage = read_proc(tier.pid) if tier.alive else None
        if usage is not None:
            tier.rss_peak_bytes = max(tier.rss_peak_bytes, usage[2], usage[1])
            if tier.alive:
                tier.cpu_s = max(tier.cpu_s, usage[0])
        metrics = scrape(tier.metrics_port, self.scrape_timeout_s) if tier.metrics_port > 0 else None
        if metrics is None:  # no metrics (yet, or no longer): no progress sample, only the guards see the usage
            if usage is not None:
                for guard in self.guards:
                    guard(tier, Sample(self.now(), tier.answered, None, 0, usage[0], usage[1]))
            return
        tier.metrics = metrics
        answered, made, pending = progress(tier.kind, metrics)
        s = Sample(self.now(), answered, made, pending, usage[0] if usage else None, usage[1] if usage else None)
        tier.samples.append(s)
        for guard in self.guards:
            guard(tier, s)

    def wait_until(self, predicate: Callable[[], bool], deadline: Deadline, timeout_s: float | None = None) -> bool:
        """Until ``predicate`` holds, re-checked after every sample and every exit."""
        with self.cond:
            return self.cond.wait_for(predicate, deadline.left(timeout_s))

    # --- faults and the end --------------------------------------------------------------------

    def signal(self, tier: Tier, sig: signal.Signals) -> bool:
        with tier.lock:
            if tier.returncode is not None:
                return False
            os.kill(tier.pid, sig)
            tier.signals.append((self.now(), sig.name))
            return True

    def wait_exit(self, tiers: Sequence[Tier], deadline: Deadline, timeout_s: float | None = None) -> bool:
        return self.wait_until(lambda: all(not t.alive for t in tiers), deadline, timeout_s)

    def close(self, grace_s: float = 10.0) -> None:
        """SIGTERM the agents, then the servers (each gets ``grace_s``), SIGKILL what is left, reap all."""
        self._stop.set()
        if self._tracker is not None:
            self._tracker.join(10)
        end = Deadline(grace_s)
        for kinds in (("agent",), ("edge",), ("cloud",)):
            group = [t for t in self.tiers if t.kind in kinds and t.alive]
            for t in group:
                self.signal(t, signal.SIGTERM)
            self.wait_exit(group, end)
        for t in self.tiers:
            self.signal(t, signal.SIGKILL)
        self.wait_exit(self.tiers, Deadline(10.0))
        for t in self._threads:
            t.join(2)
        for t in self.tiers:
            for stream in (t.proc.stdout, t.proc.stderr):
                if stream:
                    stream.close()
        leftover = [t.name for t in self.tiers if t.alive]
        if leftover:
            print(f"warning: not reaped: {leftover}", file=sys.stderr)


# --- the agent's flags: today's and the extended contract ----------------------------------------


@dataclass(frozen=True)
class AgentFlags:
    """Which of the extended agent's flags the code under test has (read from ``--help``)."""

    fps: bool
    state: bool
    until_sigterm: bool  # --frames 0 streams until SIGTERM

    @classmethod
    def from_help(cls, text: str) -> AgentFlags:
        flat = " ".join(text.split())
        frames = re.search(r"--frames FRAMES (.*?)\(default", flat)
        return cls(fps="--fps" in flat, state="--state" in flat,
                   until_sigterm=bool(frames and re.search(r"\b0 =.*(SIGTERM|until|stop)", frames.group(1))))

    @classmethod
    def detect(cls, root: Path, python: str) -> AgentFlags:
        done = subprocess.run([python, "-m", "ecd_cli", "device-agent", "--help"], cwd=root, capture_output=True,
                              text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root)})
        if done.returncode != 0:
            raise SystemExit(f"`ecd device-agent --help` in {root} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        return cls.from_help(done.stdout)


def code_under_test(root: Path, python: str) -> dict:
    """Which checkout the tiers import (``ecd.__file__`` as a tier sees it) and its commit."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    ecd_file = subprocess.run([python, "-c", "import ecd; print(ecd.__file__)"], cwd=root, capture_output=True,
                              text=True, timeout=60, check=False, env=env).stdout.strip()
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           check=False).stdout.splitlines()
    return {"root": str(root), "ecd_file": ecd_file, "commit": head, "modified_files": len(dirty)}


# --- per-agent accounting --------------------------------------------------------------------------


@dataclass
class AgentCount:
    """One agent's frames, as the application saw them.

    ``lost``: sent and never answered; ``unsent``: asked for but never sent (an agent that gave up);
    ``lost + unsent = asked - answered`` for a fixed-count run. ``duplicated``: answers delivered
    beyond one per sent frame; ``duplicates_dropped``: answers the agent caught and dropped.
    ``source``: ``report`` (its --report file), ``metrics`` (no report: its last metrics sample, at
    most one sample period old), or ``none`` (never ready: counted as answered 0, lost = asked)."""

    name: str
    asked: int  # --frames (0 = until stopped)
    exit_code: int | None
    source: str
    sent: int | None
    answered: int
    errors: int
    lost: int | None
    unsent: int | None
    duplicated: int
    duplicates_dropped: int
    stopped: bool = False  # the scenario stopped it on purpose: its unsent frames are no loss
    exit_reason: str = ""
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    moves: int | None = None
    edges: list[str] = field(default_factory=list)
    device_id: str = ""


def _num(d: dict, key: str) -> float | None:
    v = d.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def count_agent(name: str, asked: int, exit_code: int | None, report: dict | None, last: Sample | None,
                stopped: bool = False, message: str = "", device_id: str = "") -> AgentCount:
    if report is not None:
        answered = int(report.get("answered", report.get("frames", 0)))
        sent = int(report.get("sent", answered))  # today's report exists only when every sent frame was answered
        lost = int(report.get("lost", max(0, sent - answered)))
        source = "report"
    elif last is not None:
        answered, sent = last.answered, last.made
        lost = None if sent is None else max(0, sent - answered)
        source = "metrics"
    else:
        answered, sent, lost, source = 0, None, (asked or None), "none"
    unsent = None
    if asked > 0 and not stopped and sent is not None:
        unsent = max(0, asked - sent)
    r = report or {}
    return AgentCount(
        name=name, asked=asked, exit_code=exit_code, source=source, sent=sent, answered=answered,
        errors=int(r.get("errors", 0)), lost=lost, unsent=unsent,
        duplicated=max(0, answered - sent) if sent is not None else 0,
        duplicates_dropped=int(r.get("duplicates_dropped", 0)), stopped=stopped,
        exit_reason=str(r.get("exit", "")) or message,
        latency_p50_s=_num(r, "latency_p50_s"), latency_p95_s=_num(r, "latency_p95_s"), latency_p99_s=_num(r, "latency_p99_s"),
        moves=r.get("moves"), edges=list(r.get("edges", [])), device_id=str(r.get("device_id", device_id)),
    )


def read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def agent_count(tier: Tier, asked: int, report_path: Path, stopped: bool = False) -> AgentCount:
    """Count a finished agent from its report file, else its printed report, else its last sample."""
    report = read_report(report_path) or tier.last_json()
    message = ""
    if tier.returncode is not None and tier.returncode < 0:
        message = f"killed by {signal.Signals(-tier.returncode).name}"
    elif tier.returncode not in (0, None):
        lines = [re.sub(r"^\s*[\d.]+ ", "", line).strip() for line in tier.log_tail(3).splitlines()]
        message = lines[-1] if lines else ""
    return count_agent(tier.name, asked, tier.returncode, report, tier.samples[-1] if tier.samples else None,
                       stopped, message, str((tier.ready or {}).get("device_id", "")))


@dataclass
class Totals:
    agents: int
    asked: int
    sent: int
    answered: int
    errors: int
    lost: int
    unsent: int
    duplicated: int
    duplicates_dropped: int
    without_report: int  # counted from metrics or not at all
    sent_unknown: int  # agents whose sent count is unknown (lost counted as asked - answered)


def totals(counts: Sequence[AgentCount]) -> Totals:
    return Totals(
        agents=len(counts),
        asked=sum(c.asked for c in counts),
        sent=sum(c.sent or 0 for c in counts),
        answered=sum(c.answered for c in counts),
        errors=sum(c.errors for c in counts),
        lost=sum(c.lost or 0 for c in counts),
        unsent=sum(c.unsent or 0 for c in counts),
        duplicated=sum(c.duplicated for c in counts),
        duplicates_dropped=sum(c.duplicates_dropped for c in counts),
        without_report=sum(c.source != "report" for c in counts),
        sent_unknown=sum(c.sent is None for c in counts),
    )


def tier_usage(tiers: Iterable[Tier]) -> dict:
    """CPU seconds (whole process life) and peak RSS of a group of tiers."""
    tiers = list(tiers)
    return {
        "processes": len(tiers),
        "cpu_s": round(sum(t.cpu_s for t in tiers), 2),
        "rss_peak_mb_max": round(max((t.rss_peak_bytes for t in tiers), default=0) / 2**20, 1),
        "rss_peak_mb_sum": round(sum(t.rss_peak_bytes for t in tiers) / 2**20, 1),
    }


def clean_json(value: object) -> object:
    """NaN and infinities as null: the JSON written is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def install_sigterm() -> None:
    """SIGTERM to the harness unwinds like Ctrl-C, so every ``finally`` ends its processes."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, raise_interrupt)


def use_root(root: Path) -> Path:
    """Import the project from ``root`` in this process too (the harness's health checks and protobuf
    messages come from the same checkout as the tiers)."""
    root = root.resolve()
    if not (root / "ecd_cli").is_dir():
        raise SystemExit(f"--root: {root} holds no ecd_cli package")
    sys.path.insert(0, str(root))
    return root
