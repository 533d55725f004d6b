"""CrowdPower's site selection (paper 001 §3.6) over the running system: which edge node's area
should sense an event?

Transport-free; ``cloud_server.core`` hands it the registry's records. The scoring is
:func:`scheduling.quality.crowdpower.select_site`, unchanged (its reconstruction of the lost
formula is listed there). How the paper's sites meet a live system (our choices):

* **Sites** are the alive edge nodes with a position; a site's **participants** are the live devices
  placed on it (placement decides who is where).
* A participant's **phone quality** is the sensor benchmark the device registered (``--sensors``,
  0..10 per sensor, SensMark-style); a sensor it did not report scores 0, as in the paper.
* **Reputation** is the registry's, written by CrowdPower's own campaigns; a participant below the
  reputation floor counts as the paper's *malicious participant*, so its site is not eligible.
* Battery and price are not reported by our devices: every participant has battery 1 and price 1,
  so the budget bounds the group's size.
* **Proximity** is the great-circle distance from the event to the edge node, in metres.
"""

from __future__ import annotations

import json
import math

from cloud_server.campaigns import DEFAULT_REPUTATION_FLOOR
from cloud_server.registry import DeviceRecord, EdgeRecord
from ecd.errors import PreconditionError, RequestError
from ecd.limits import printable
from ecd.types import Position
from ecd.scheduler_types import SiteRequest, SiteScore, SiteSelection
from scheduling.quality import crowdpower

MAX_SENSORS = 32  # sensors one device may report


def check_sensors(sensors: dict[str, float]) -> dict[str, float]:
    """A device's sensor scores, or a :class:`~ecd.errors.RequestError` naming the bad entry."""
    known = sorted({s for v in crowdpower.EVENTS.values() for s in v})
    if len(sensors) > MAX_SENSORS:
        raise RequestError(f"sensors: at most {MAX_SENSORS} entries, got {len(sensors)}")
    for name, score in sensors.items():
        if name not in known:
            raise RequestError(f"sensors: {name[:40]!r} is not one of {', '.join(known)}")
        if not (math.isfinite(score) and 0 <= score <= 10):
            raise RequestError(f"sensors[{name}]: expected a score in 0..10, got {score}")
    return dict(sensors)


def _local_m(p: Position, origin: Position) -> tuple[float, float]:
    """(east, north) metres of ``p`` from ``origin`` on a local plane (sites lie kilometres apart)."""
    north = math.radians(p.lat - origin.lat) * 6_371_000.0
    east = math.radians(p.lon - origin.lon) * 6_371_000.0 * math.cos(math.radians(origin.lat))
    return east, north


def sites(edges: list[EdgeRecord], devices: list[DeviceRecord], floor: float) -> tuple[list[crowdpower.Site], dict[str, list[str]]]:
    """CrowdPower's sites from the edge nodes with a position and the devices placed on them, and
    each site's participant device ids (in the order the sites list them)."""
    out, members = [], {}
    for e in sorted(edges, key=lambda e: e.edge_id):
        if e.lat is None or e.lon is None:
            continue
        mine = [d for d in devices if d.edge_id == e.edge_id]
        participants = [crowdpower.Participant(json.loads(d.sensors), reputation=d.reputation, malicious=d.reputation < floor)
                        for d in mine]
        out.append(crowdpower.Site(e.edge_id, (e.lat, e.lon), participants))
        members[e.edge_id] = [d.device_id for d in mine]
    return out, members


def select(req: SiteRequest, edges: list[EdgeRecord], devices: list[DeviceRecord],
           floor: float = DEFAULT_REPUTATION_FLOOR) -> SiteSelection:
    """Score every site for the event and choose the best eligible one."""
    if req.event not in crowdpower.EVENTS:  # checked here too: the caller's text is echoed bounded
        raise RequestError(f"event: expected one of {', '.join(crowdpower.EVENTS)}, got {printable(req.event)!r}")
    if req.position is None:
        raise RequestError("position: required (where the event is)")
    event_at = req.position.check("position")
    if not (math.isfinite(req.level) and 0 <= req.level <= 10):
        raise RequestError(f"level: expected a phone quality in 0..10, got {req.level}")
    if not (math.isfinite(req.budget) and req.budget >= 0):
        raise RequestError(f"budget: expected a finite value >= 0, got {req.budget}")
    found, members = sites(edges, devices, floor)
    if not found:
        raise PreconditionError("sites: no alive edge node has a position (register edge nodes with --position)")
    local = [crowdpower.Site(s.name, _local_m(Position(*s.position), event_at), s.participants) for s in found]
    best, scores = crowdpower.select_site(local, req.event, req.level, req.budget, (0.0, 0.0))
    return SiteSelection(
        chosen=best.site if best else "",
        sites=[SiteScore(s.site, s.eligible, s.reason, s.quality, [members[s.site][i] for i in s.group], s.price,
                         s.proximity_m, s.score) for s in scores],
    )
