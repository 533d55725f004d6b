"""Quality inputs as JSON: CrowdPower site lists and participants' reports (readers and writers).

Site list (an area of interest, paper 001 §3.6)::

    {"event_position": [x, y],                                # metres; optional, default [0, 0]
     "sites": [{"name": "A", "position": [x, y],
                "participants": [{"sensor_quality": {"camera": 8, ...},   # sensor -> 0..10
                                  "reputation": 3.0, "battery": 1.0,      # optional
                                  "price": 1.0, "malicious": false}]}]}  # optional

Reports (participants × time slots, ``null`` = nothing sent)::

    {"values": [[46.1, null, 45.8], [46.3, 46.0, 46.2]]}

Errors are :class:`~scheduling.quality.crowdpower.CrowdPowerError` (a
:class:`~scheduling.errors.QualityError`) with a one-line message naming the file and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from scheduling.jsonio import load_json, show, write_json
from scheduling.errors import QualityError
from scheduling.quality import Reports
from scheduling.quality.crowdpower import CrowdPowerError, Participant, Site

__all__ = [
    "AreaOfInterest",
    "sites_from_dict",
    "sites_to_dict",
    "read_sites",
    "reports_from_dict",
    "reports_to_dict",
    "read_reports",
    "write_json",
]

_PARTICIPANT_FIELDS = {f.name for f in fields(Participant)}


@dataclass(frozen=True)
class AreaOfInterest:
    """The candidate sites of a site-selection request and where the event is (metres)."""

    sites: list[Site]
    event_position: tuple[float, float] = field(default=(0.0, 0.0))






def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CrowdPowerError(f"{where}: expected a finite number, got {show(value)}")
    return float(value)


def _point(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CrowdPowerError(f"{where}: expected [x, y], got {show(value)}")
    return (_number(value[0], where), _number(value[1], where))


def _participant(p: Any, where: str) -> Participant:
    if not isinstance(p, dict):
        raise CrowdPowerError(f"{where}: expected an object, got {show(p)}")
    unknown = sorted(set(p) - _PARTICIPANT_FIELDS)
    if unknown:
        raise CrowdPowerError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(_PARTICIPANT_FIELDS))})")
    if "sensor_quality" not in p:
        raise CrowdPowerError(f"{where}: missing field 'sensor_quality'")
    sq = p["sensor_quality"]
    if not isinstance(sq, dict):
        raise CrowdPowerError(f"{where}.sensor_quality: expected an object sensor -> score, got {show(sq)}")
    kwargs: dict[str, Any] = {"sensor_quality": {str(s): _number(v, f"{where}.sensor_quality.{s}") for s, v in sq.items()}}
    for name in ("reputation", "battery", "price"):
        if name in p:
            kwargs[name] = _number(p[name], f"{where}.{name}")
    if "malicious" in p:
        if not isinstance(p["malicious"], bool):
            raise CrowdPowerError(f"{where}.malicious: expected true or false, got {show(p['malicious'])}")
        kwargs["malicious"] = p["malicious"]
    return Participant(**kwargs)


def sites_from_dict(d: Any, source: str = "instance") -> AreaOfInterest:
    if not isinstance(d, dict):
        raise CrowdPowerError(f"{source}: expected a JSON object, got {type(d).__name__}")
    if "sites" not in d:
        raise CrowdPowerError(f"{source}: missing field 'sites'")
    if not isinstance(d["sites"], list):
        raise CrowdPowerError(f"{source}: sites: expected a list of sites, got {show(d['sites'])}")
    sites = []
    for i, s in enumerate(d["sites"]):
        where = f"{source}: sites[{i}]"
        if not isinstance(s, dict):
            raise CrowdPowerError(f"{where}: expected an object, got {show(s)}")
        for name in ("name", "position"):
            if name not in s:
                raise CrowdPowerError(f"{where}: missing field {name!r}")
        participants = s.get("participants", [])
        if not isinstance(participants, list):
            raise CrowdPowerError(f"{where}.participants: expected a list, got {show(participants)}")
        sites.append(Site(str(s["name"]), _point(s["position"], f"{where}.position"),
                          [_participant(p, f"{where}.participants[{j}]") for j, p in enumerate(participants)]))
    position = _point(d["event_position"], f"{source}: event_position") if d.get("event_position") is not None else (0.0, 0.0)
    return AreaOfInterest(sites, position)


def sites_to_dict(area: AreaOfInterest) -> dict:
    return {
        "event_position": list(area.event_position),
        "sites": [
            {"name": s.name, "position": list(s.position),
             "participants": [{"sensor_quality": dict(p.sensor_quality), "reputation": p.reputation, "battery": p.battery,
                               "price": p.price, "malicious": p.malicious} for p in s.participants]}
            for s in area.sites
        ],
    }


def read_sites(path: str | Path) -> AreaOfInterest:
    return sites_from_dict(load_json(path, CrowdPowerError), source=str(path))


def reports_from_dict(d: Any, source: str = "reports") -> Reports:
    if not isinstance(d, dict):
        raise CrowdPowerError(f"{source}: expected a JSON object, got {type(d).__name__}")
    if "values" not in d:
        raise CrowdPowerError(f"{source}: missing field 'values'")
    rows = d["values"]
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise CrowdPowerError(f"{source}: values: expected a list of rows (one per participant), got {show(rows)}")
    try:
        values = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise CrowdPowerError(f"{source}: values: expected rows of equal length holding numbers or null") from None
    try:
        return Reports(values)
    except QualityError as e:
        raise CrowdPowerError(f"{source}: {e}") from None


def reports_to_dict(reports: Reports) -> dict:
    return {"values": [[None if math.isnan(v) else float(v) for v in row] for row in reports.values]}


def read_reports(path: str | Path) -> Reports:
    return reports_from_dict(load_json(path, CrowdPowerError), source=str(path))

