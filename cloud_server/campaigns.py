"""Sensing campaigns in the running cloud: TAPP (paper 002) hands the registered devices their
sensing tasks from their location traces; CrowdPower (paper 001) scores the reports they send into
reputations, which decide who the next campaign may choose.

Transport-free and registry-free: plain functions over records and arrays; ``cloud_server.core``
stores what they decide.

How the papers meet a live system (our choices; the papers evaluate offline):

* **Grid and profiles.** The operator's rectangle is cut into rows × cols cells — paper 002's
  subregions. A device's *actual profile* is the share of its reported positions (its trace) in each
  cell; positions outside the rectangle do not count, and a device with none inside is not a
  participant.
* **Unit tasks.** One task = one report from a cell in one time slot, so cell j's workload
  w_j = slots × reporters_j. Every device has the same time threshold T (``time_threshold``, default
  the number of slots) and privacy threshold θ (``theta``), as in the paper's §5.1.
* **Slots.** A device's x_ij tasks in cell j are laid out cyclically over the slots, the devices with
  the most tasks first, so each slot of cell j gets reporters_j reports from distinct devices whenever
  x_ij ≤ slots.
* **Reputation in the loop** (paper 001 §3.7). Devices whose reputation is below the floor are left
  out before allocating. A device that was never scored has the neutral reputation — Algorithm 2's
  value for a participant of exactly average quality (s = 0), 2.036 with the generalised logistic's
  W = 0.5, X = 3, B = 0.5, C = 1, f = 2. The default floor, 1.8, lies between that and the 1.43–1.65
  that biased participants get in paper 001's temperature scenario (docs/explanation/crowdpower.md).
* **Scoring** (see :func:`score`). Per cell and slot, Algorithm 1 gives each report's quality among
  that slot's reporters and §3.7.3 flags outliers; Algorithm 2 turns a device's qualities over the
  slots into its reputation. A device's reputation from the campaign is the mean over the cells it
  reported in, weighted by its reports; it replaces the registry's value. Quality is printed
  relative to an average reporter (1.0). Algorithm 2 sums over the slots, so a
  short campaign moves reputations little: with 4 slots a device sending biased readings kept 1.86
  (above the floor) in our test scenario, with 8 slots it fell to 1.28 while honest devices stayed at
  2.03–2.04 (tests/cloud_server/test_campaigns.py) — campaigns meant to score devices need ≥ 8 slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ecd.errors import MissingExtraError, PreconditionError, RequestError
from ecd.limits import check_name
from ecd.types import Position
from ecd.scheduler_types import CampaignSpec, DeviceQuality, Grid
from scheduling.quality import crowdpower
from scheduling.quality.crowdpower import B, C, F, W, X

NEUTRAL_REPUTATION = W + (X - W) / (1 + math.exp(B * C)) ** (1 / F)  # Algorithm 2 at s = 0: 2.0361
DEFAULT_REPUTATION_FLOOR = 1.8
SENSOR_NOISE = 1.0  # the spread honest readings of one slot may have, in the readings' unit (ours; see slot_quality())
TAPP_METHODS = ("tapp", "baseline1", "baseline2", "tapp_plus")  # paper 002: TAPP and its baselines; tapp_plus is ours (scheduling.allocation.tapp)
# paper 004: its Algorithms 1-2 ("coverage") and Benchmarks 1-3; coverage_exact is ours (scheduling.allocation.coverage)
COVERAGE_METHODS = {"coverage": "proposed", "coverage_benchmark1": "benchmark1", "coverage_benchmark2": "benchmark2",
                    "coverage_benchmark3": "benchmark3", "coverage_exact": "exact"}
METHODS = TAPP_METHODS + tuple(COVERAGE_METHODS)
DEFAULT_SUBBANDS = 4
COVERAGE_SEED = 0  # the channel draw (shadowing, fading, powers, sensing rates) of a coverage campaign


@dataclass(frozen=True)
class Limits:
    """What one campaign may ask of the cloud (a campaign larger than this is refused)."""

    max_cells: int = 10_000
    max_slots: int = 1_000
    max_tasks: int = 1_000_000


@dataclass
class Allocation:
    """What a campaign's allocation decided, before it is stored."""

    participants: list[str]  # device ids considered, in profile order
    excluded: list[str]  # device ids left out for their reputation
    tasks: list[tuple[int, str, int, int]]  # (task id, device id, cell, slot)
    disclosure: dict[str, float]
    dangerous: set[str]
    requested: int
    allocated: int
    utility: float
    seconds: float
    coverage: int = 0  # coverage methods: cells covered, of ``cells``
    cells: int = 0
    objective: float = 0.0
    latency_s: float = 0.0


def check_spec(spec: CampaignSpec, limits: Limits = Limits()) -> CampaignSpec:
    """The spec, or a :class:`~ecd.errors.RequestError` naming the first bad field."""
    check_name(spec.name, "name")
    g = spec.grid
    g.south_west.check("grid.south_west")
    g.north_east.check("grid.north_east")
    if not (g.south_west.lat < g.north_east.lat and g.south_west.lon < g.north_east.lon):
        raise RequestError("grid: south_west must lie south and west of north_east")
    if g.rows < 1 or g.cols < 1:
        raise RequestError(f"grid.rows, grid.cols: expected >= 1, got {g.rows} x {g.cols}")
    if g.cells > limits.max_cells:
        raise RequestError(f"grid: {g.cells} cells exceed the limit of {limits.max_cells}")
    if not 1 <= spec.slots <= limits.max_slots:
        raise RequestError(f"slots: expected 1..{limits.max_slots}, got {spec.slots}")
    if len(spec.reporters) not in (1, g.cells):
        raise RequestError(f"reporters: expected one value or one per cell ({g.cells}), got {len(spec.reporters)}")
    if any(r < 0 for r in spec.reporters) or not any(spec.reporters):
        raise RequestError("reporters: expected values >= 0, not all 0")
    work = spec.slots * (spec.reporters[0] * g.cells if len(spec.reporters) == 1 else sum(spec.reporters))
    if work > limits.max_tasks:
        raise RequestError(f"reporters, slots: {work} tasks exceed the limit of {limits.max_tasks}")
    if spec.method not in METHODS:
        raise RequestError(f"method: expected one of {', '.join(METHODS)}, got {spec.method!r}")
    if spec.method in TAPP_METHODS and not (math.isfinite(spec.theta) and spec.theta > 0):
        raise RequestError(f"theta: expected a finite value > 0, got {spec.theta}")
    if spec.method in COVERAGE_METHODS:
        if not (math.isfinite(spec.rho) and 0 <= spec.rho <= 1):
            raise RequestError(f"rho: expected a value in [0, 1], got {spec.rho}")
        if not 0 <= spec.subbands <= 1_000:
            raise RequestError(f"subbands: expected 0..1000 (0 = {DEFAULT_SUBBANDS}), got {spec.subbands}")
    if spec.time_threshold < 0:
        raise RequestError(f"time_threshold: expected >= 0, got {spec.time_threshold}")
    if not math.isfinite(spec.reputation_floor):
        raise RequestError(f"reputation_floor: expected a finite value, got {spec.reputation_floor}")
    return spec


def workload(spec: CampaignSpec) -> np.ndarray:
    per_cell = np.broadcast_to(np.asarray(spec.reporters, dtype=np.int64), (spec.grid.cells,))
    return per_cell * spec.slots


def cells_of(grid: Grid, points: np.ndarray) -> np.ndarray:
    """Row-major cell of each (lat, lon) point; -1 outside the grid."""
    lat0, lon0 = grid.south_west.lat, grid.south_west.lon
    row = np.floor((points[:, 0] - lat0) / (grid.north_east.lat - lat0) * grid.rows).astype(np.int64)
    col = np.floor((points[:, 1] - lon0) / (grid.north_east.lon - lon0) * grid.cols).astype(np.int64)
    row = np.where(points[:, 0] == grid.north_east.lat, grid.rows - 1, row)  # the north and east edges belong in
    col = np.where(points[:, 1] == grid.north_east.lon, grid.cols - 1, col)
    inside = (row >= 0) & (row < grid.rows) & (col >= 0) & (col < grid.cols)
    return np.where(inside, row * grid.cols + col, -1)


def cell_of(grid: Grid, position: Position) -> int:
    return int(cells_of(grid, np.array([[position.lat, position.lon]]))[0])


def profiles(grid: Grid, traces: dict[str, list[tuple[float, float]]]) -> tuple[list[str], np.ndarray]:
    """The devices with a position inside the grid and their actual profiles (share per cell)."""
    ids, rows = [], []
    for device_id, points in sorted(traces.items()):
        cells = cells_of(grid, np.asarray(points, dtype=np.float64).reshape(-1, 2))
        cells = cells[cells >= 0]
        if len(cells):
            ids.append(device_id)
            rows.append(np.bincount(cells, minlength=grid.cells) / len(cells))
    return ids, np.array(rows).reshape(len(rows), grid.cells)


def layout(x: np.ndarray, slots: int) -> list[tuple[int, int, int]]:
    """(participant, cell, slot) per unit task: each cell's tasks laid cyclically over the slots,
    the participants with the most tasks there first."""
    out = []
    for j in np.flatnonzero(x.sum(axis=0)):
        slot = 0
        for i in sorted(np.flatnonzero(x[:, j]), key=lambda i: (-x[i, j], i)):
            for _ in range(int(x[i, j])):
                out.append((int(i), int(j), slot % slots))
                slot += 1
    return out


def allocate(spec: CampaignSpec, traces: dict[str, list[tuple[float, float]]], reputations: dict[str, float],
             floor: float) -> Allocation:
    """TAPP (or a baseline) over the devices' traces; devices below the reputation floor left out."""
    import time

    try:
        from scheduling.allocation import tapp  # the package holds the coverage scheduler too: scipy
    except ImportError:
        raise MissingExtraError("campaign: allocation needs scipy: pip install 'ecd-runtime[cloud]'") from None

    ids, p = profiles(spec.grid, traces)
    excluded = [d for d in ids if reputations.get(d, NEUTRAL_REPUTATION) < floor]
    keep = [k for k, d in enumerate(ids) if d not in excluded]
    ids, p = [ids[k] for k in keep], p[keep]
    w = workload(spec)
    if not ids:
        raise PreconditionError("campaign: no device above the reputation floor has a position inside the grid")
    threshold = spec.time_threshold or spec.slots
    try:
        inst = tapp.TappInstance(p, np.full(len(ids), threshold), w, np.full(len(ids), spec.theta))
        t0 = time.perf_counter()
        result = tapp.allocate(inst, spec.method)
        seconds = time.perf_counter() - t0
    except tapp.TappInfeasible as e:
        raise PreconditionError(f"campaign: infeasible over {len(ids)} devices: {e}") from None
    tasks = [(k, ids[i], cell, slot) for k, (i, cell, slot) in enumerate(layout(result.x, spec.slots))]
    allocated = result.x.sum(axis=1) > 0
    return Allocation(
        participants=ids, excluded=excluded, tasks=tasks,
        disclosure={ids[i]: float(result.disclosure[i]) for i in np.flatnonzero(allocated)},
        dangerous={ids[i] for i in np.flatnonzero(allocated & (result.disclosure > spec.theta))},
        requested=int(w.sum()), allocated=int(result.x.sum()), utility=float(result.utility), seconds=seconds,
    )


def distance_km(points: np.ndarray, to: Position) -> np.ndarray:
    """Great-circle distance (km) of each (lat, lon) point to ``to``."""
    lat1, lon1 = np.radians(points[:, 0]), np.radians(points[:, 1])
    lat2, lon2 = math.radians(to.lat), math.radians(to.lon)
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * math.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def coverage_instance(spec: CampaignSpec, positions: dict[str, tuple[float, float]], seed: int = COVERAGE_SEED):
    """Paper 004's instance over the live system (our mapping): the users are the devices whose
    latest position lies in the grid, the subareas are the grid's cells, the base station stands at
    the grid's centre, and each device's channel is drawn (seeded) at its real distance from it with
    the reconstructed model (path loss, shadowing, fading, transmit power, sensing rate); the task is
    one report of 1 Mbit per slot. Returns the device ids and the instance."""
    from scheduling.allocation import coverage

    ids = sorted(d for d, p in positions.items() if cell_of(spec.grid, Position(*p)) >= 0)
    g = spec.grid
    centre = Position((g.south_west.lat + g.north_east.lat) / 2, (g.south_west.lon + g.north_east.lon) / 2)
    n = spec.subbands or DEFAULT_SUBBANDS
    if len(ids) <= n:
        raise PreconditionError(f"subbands: paper 004 schedules N < K; {len(ids)} devices with a position in the grid "
                                f"for {n} subbands (lower subbands, or wait for more devices)")
    points = np.array([positions[d] for d in ids], dtype=np.float64)
    rng = np.random.default_rng(seed)
    rate = coverage.channel_rates(np.maximum(distance_km(points, centre), 0.05), n, rng)
    return ids, coverage.CoverageInstance(
        sensing_rate=rng.uniform(1e5, 1e6, len(ids)), rate=rate, subarea=cells_of(g, points), n_subareas=g.cells,
        task_bits=1e6, rho=spec.rho,
    )


def allocate_coverage(spec: CampaignSpec, positions: dict[str, tuple[float, float]], reputations: dict[str, float],
                      floor: float) -> Allocation:
    """Coverage-aware scheduling (paper 004) of the devices above the reputation floor; each
    scheduled device reports from its cell in every slot."""
    import time

    try:
        from scheduling.allocation import coverage
    except ImportError:
        raise MissingExtraError("campaign: allocation needs scipy: pip install 'ecd-runtime[cloud]'") from None

    inside = {d for d, p in positions.items() if cell_of(spec.grid, Position(*p)) >= 0}
    excluded = sorted(d for d in inside if reputations.get(d, NEUTRAL_REPUTATION) < floor)
    ids, inst = coverage_instance(spec, {d: p for d, p in positions.items() if d in inside and d not in excluded})
    t0 = time.perf_counter()
    result = coverage.allocate(inst, COVERAGE_METHODS[spec.method], seed=COVERAGE_SEED)
    seconds = time.perf_counter() - t0
    chosen = sorted(int(k) for k in result.scheduled)
    tasks = [(n, ids[k], int(inst.subarea[k]), slot)
             for n, (k, slot) in enumerate((k, slot) for k in chosen for slot in range(spec.slots))]
    return Allocation(
        participants=ids, excluded=excluded, tasks=tasks, disclosure={}, dangerous=set(),
        requested=spec.grid.cells * spec.slots, allocated=len(tasks), utility=0.0,
        seconds=seconds, coverage=int(result.coverage), cells=spec.grid.cells, objective=float(result.objective),
        latency_s=float(result.latency),
    )


def slot_quality(values: np.ndarray, noise: float = SENSOR_NOISE, eps: float = crowdpower.QUALITY_EPS,
                 iterations: int = 100) -> np.ndarray:
    """Algorithm 1 (paper 001, Box 1) for one slot's readings, with one change of ours, labelled: a
    reading's squared distance to the centroid counts only beyond ``noise`` (the spread honest
    readings of one slot may have), ``max((x - c)² - noise², 0)``. The paper's rule is scale-free:
    among honest readings that agree within the sensor's own noise it still hands most of the quality
    to whichever happen to be closest, and Algorithm 2 weighs a below-average quality about 15 times
    more than an above-average one, so luck becomes a low reputation for an honest device. With the
    allowance, readings within the noise share the quality evenly, and a reading far outside it still
    gets almost none. ``scheduling.quality.crowdpower.slot_quality`` is the paper's version, unchanged."""
    d = np.asarray(values, dtype=np.float64)
    n = len(d)
    q = np.full(n, 1.0 / n)
    for _ in range(iterations):
        centroid = float(np.sum(q * d) / np.sum(q))
        dist = np.maximum((d - centroid) ** 2 - noise**2, 0.0)
        lam = dist.sum()
        if lam == 0:
            return np.full(n, 1.0 / n)
        inv = 1.0 / (dist / lam + eps)
        new = inv / inv.sum()
        if np.max(np.abs(new - q)) < 1e-9:
            return new
        q = new
    return q


def outliers(values: np.ndarray, noise: float = SENSOR_NOISE, u: float = 0.5, r_factor: float = 2.0) -> np.ndarray:
    """§3.7.3's distance-based outliers, with two changes of ours for the few readings of one slot:
    r = max(r_factor·std, noise), the allowance of :func:`slot_quality`, so three honest readings a
    few tenths apart are not all flagged; and a reading needs ⌈u·(n−1)⌉ of the *other* n−1 readings
    within r (the paper's ⌈u·n⌉ cannot be met by two honest readings beside a bad one when n = 3)."""
    d = np.asarray(values, dtype=np.float64)
    r = max(r_factor * d.std(), noise)
    close = (np.abs(d[:, None] - d[None, :]) <= r).sum(axis=1) - 1
    return close < math.ceil(u * (len(d) - 1))


def score(spec: CampaignSpec, rows: list[tuple[int, str, int, int, bool, float | None, str | None]]) -> dict[str, DeviceQuality]:
    """CrowdPower over a campaign's answered tasks: per device its reports, mean quality,
    reputation (mean over its cells, weighted by reports) and outliers. Names are filled in later.

    Paper 001 has every participant report in every slot; here each slot of a cell has only its
    reporters, so (ours) Algorithm 1 and the outlier rule run per slot over that slot's reporters —
    never over filled-in values, which would take the quality from the real reports — and before
    Algorithm 2 each quality is rescaled to the cell's n participants (q·r_k/n, so a reporter of
    average quality has 1/n, as in the paper) with 1/n where a device did not report (no effect on
    its sum). A slot with a single reporter is not scored.
    """
    by_cell: dict[int, dict[str, np.ndarray]] = {}
    for _, device_id, cell, slot, answered, reading, _ in rows:
        if answered and reading is not None and math.isfinite(reading):
            by_cell.setdefault(cell, {}).setdefault(device_id, np.full(spec.slots, np.nan))[slot] = reading
    acc: dict[str, list[float]] = {}  # device -> [reports, quality sum, weighted reputation, outliers]
    for cell, readings in sorted(by_cell.items()):
        devices = sorted(readings)
        values = np.stack([readings[d] for d in devices])
        n = len(devices)
        q = np.full(values.shape, 1.0 / n)
        flags = np.zeros(values.shape, dtype=bool)
        scored = np.zeros(values.shape, dtype=bool)
        for k in range(spec.slots):
            who = np.flatnonzero(~np.isnan(values[:, k]))
            if len(who) < 2:
                continue  # one reporter: nothing to compare it with
            slot_q = slot_quality(values[who, k])
            q[who, k] = slot_q * len(who) / n
            flags[who, k] = outliers(values[who, k])
            scored[who, k] = True
        if not scored.any():
            continue
        reputation = crowdpower.reputation(q)
        for i, d in enumerate(devices):
            m = int(scored[i].sum())
            if not m:
                continue
            a = acc.setdefault(d, [0, 0.0, 0.0, 0])
            a[0] += m
            a[1] += float((q[i][scored[i]] * n).sum())  # quality relative to an average reporter (1.0)
            a[2] += float(reputation[i]) * m
            a[3] += int(flags[i][scored[i]].sum())
    return {
        d: DeviceQuality(d, "", int(m), qs / m, r / m, int(o))
        for d, (m, qs, r, o) in acc.items() if m
    }
