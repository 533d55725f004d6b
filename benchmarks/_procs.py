"""Tiers as separate processes on loopback, for ``benchmarks/faults.py``, ``load.py`` and ``pipeline.py``.

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

What is read of a tier is ``_metrics.py``'s; how an agent's frames are counted, ``_counts.py``'s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from _metrics import Metric, Sample, progress, read_proc, scrape

HARNESS_ROOT = Path(__file__).resolve().parents[1]  # the checkout this harness is in (``--root`` may name another)

# Runs in a child first: die with the harness (PR_SET_PDEATHSIG = SIGKILL), and not start at all if
# the harness is already gone; what follows it execs the child's program (same pid).
DIE_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"
    "if os.getppid() != int(os.environ['ECD_BENCH_PARENT']): sys.exit(70)\n"
)
# A tier becomes `python -m ecd_cli ...` (same command line as an operator's).
LAUNCHER = DIE_WITH_PARENT + "os.execv(sys.executable, [sys.executable, '-m', 'ecd_cli', *sys.argv[1:]])\n"


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

    def spawn(self, kind: str, name: str, args: Sequence[str], prefix: Sequence[str] = ()) -> Tier:
        """``prefix``: a command that execs the tier in place (the testbed's ``nsenter --net=...``)."""
        assert threading.current_thread() is threading.main_thread(), "spawn from the main thread (PR_SET_PDEATHSIG)"
        env = {**os.environ, "ECD_BENCH_PARENT": str(os.getpid()), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH", "")) if p)}
        argv = [*prefix, self.python, "-c", LAUNCHER, *args]
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
