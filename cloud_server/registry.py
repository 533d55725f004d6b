"""The cloud's registry of devices, edge nodes and task heads, in SQLite so a restart loses nothing.

Transport-free: the servicer calls these methods; tests call them directly.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ecd.types import Split

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    radio TEXT NOT NULL,
    w_energy REAL NOT NULL,
    w_privacy REAL NOT NULL,
    min_split INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    split_device INTEGER NOT NULL,
    split_edge INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    reputation REAL NOT NULL DEFAULT 1.0,
    registered_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS edges (
    edge_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    capacity REAL NOT NULL,
    load REAL NOT NULL DEFAULT 0,
    queue_depth INTEGER NOT NULL DEFAULT 0,
    last_seen_unix REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    model_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    added_unix REAL NOT NULL,
    PRIMARY KEY (model_id, name)
);
"""


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    token: str
    name: str
    profile: str
    radio: str
    w_energy: float
    w_privacy: float
    min_split: int
    model_id: str
    model_version: str
    split_device: int
    split_edge: int
    encoding: str  # Encoding.value
    edge_id: str
    reputation: float = 1.0

    @property
    def split(self) -> Split:
        return Split(self.split_device, self.split_edge)


@dataclass(frozen=True)
class EdgeRecord:
    edge_id: str
    endpoint: str
    capacity: float
    load: float
    queue_depth: int
    last_seen_unix: float


class Registry:
    """Thread-safe; every write is committed before the call returns."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- devices -----------------------------------------------------------------------------

    def add_device(self, **fields) -> DeviceRecord:
        record = DeviceRecord(device_id=uuid.uuid4().hex[:12], token=secrets.token_hex(16), **fields)
        cols = list(record.__dataclass_fields__)
        with self._lock:
            self._db.execute(
                f"INSERT INTO devices ({', '.join(cols)}, registered_unix) VALUES ({', '.join('?' * (len(cols) + 1))})",
                [getattr(record, c) for c in cols] + [time.time()],
            )
        return record

    def device(self, device_id: str) -> DeviceRecord | None:
        cols = list(DeviceRecord.__dataclass_fields__)
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(cols)} FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return None if row is None else DeviceRecord(*row)

    def update_device(self, device_id: str, **fields) -> DeviceRecord:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE devices SET {sets} WHERE device_id = ?", [*fields.values(), device_id])
        record = self.device(device_id)
        assert record is not None
        return record

    def device_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM devices").fetchone()[0])

    # --- edge nodes --------------------------------------------------------------------------

    def add_edge(self, endpoint: str, capacity: float) -> EdgeRecord:
        """An edge re-registering from the same endpoint keeps its id."""
        with self._lock:
            row = self._db.execute("SELECT edge_id FROM edges WHERE endpoint = ?", (endpoint,)).fetchone()
            edge_id = row[0] if row else uuid.uuid4().hex[:12]
            self._db.execute(
                "INSERT OR REPLACE INTO edges (edge_id, endpoint, capacity, load, queue_depth, last_seen_unix) "
                "VALUES (?, ?, ?, 0, 0, ?)",
                (edge_id, endpoint, capacity, time.time()),
            )
        edge = self.edge(edge_id)
        assert edge is not None
        return edge

    def edge(self, edge_id: str) -> EdgeRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT edge_id, endpoint, capacity, load, queue_depth, last_seen_unix FROM edges WHERE edge_id = ?",
                (edge_id,),
            ).fetchone()
        return None if row is None else EdgeRecord(*row)

    def edges(self) -> list[EdgeRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT edge_id, endpoint, capacity, load, queue_depth, last_seen_unix FROM edges ORDER BY edge_id"
            ).fetchall()
        return [EdgeRecord(*r) for r in rows]

    def heartbeat(self, edge_id: str, load: float, queue_depth: int) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE edges SET load = ?, queue_depth = ?, last_seen_unix = ? WHERE edge_id = ?",
                (load, queue_depth, time.time(), edge_id),
            )
        return cur.rowcount == 1

    def devices_per_edge(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT edge_id, COUNT(*) FROM devices GROUP BY edge_id").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    # --- task heads --------------------------------------------------------------------------

    def put_head(self, model_id: str, name: str, spec: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO heads (model_id, name, spec, added_unix) VALUES (?, ?, ?, ?)",
                (model_id, name, json.dumps(spec), time.time()),
            )

    def heads(self, model_id: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT spec FROM heads WHERE model_id = ? ORDER BY added_unix, name", (model_id,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]
