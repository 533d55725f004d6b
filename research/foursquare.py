"""Reading the Foursquare NYC check-in CSV that the TAPP and placement experiments are evaluated on.

The file is not part of the repository; pass its path. Columns used: ``tid`` (a user's trajectory),
``lat_lon`` (``"lat lon"``), ``date_time`` (``YYYY-MM-DD HH:MM:SS``) and ``root_type`` (the venue
category); other columns are ignored."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ecd.errors import ConfigError


@dataclass(frozen=True)
class CheckIn:
    tid: str  # the trajectory: one user
    lat: float
    lon: float
    when: str  # "YYYY-MM-DD HH:MM:SS", sorts in time order
    category: str  # root_type


def read_checkins(path: str | Path) -> Iterator[CheckIn]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"check-ins: no such file {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            try:
                lat, lon = (float(v) for v in row["lat_lon"].split())
                yield CheckIn(row["tid"], lat, lon, row["date_time"], row["root_type"])
            except (KeyError, ValueError, AttributeError):
                raise ConfigError(
                    f"{path}, line {reader.line_num}: expected tid, lat_lon ('lat lon'), date_time and root_type"
                ) from None
