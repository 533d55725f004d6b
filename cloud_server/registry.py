"""The cloud's registry of devices, edge nodes and task heads, in a database so a restart loses nothing.

One option, ``CloudConfig.db``, picks where it lives:

* a file path (the default, ``ecd-cloud.sqlite3``): SQLite, embedded, for one cloud server;
* ``postgresql://user@host:port/dbname`` (or ``postgresql:///dbname?host=/socket/dir``): PostgreSQL,
  so that **two or more cloud replicas share one state**. Needs the ``cloud`` extra's driver.

What holds on both, for every replica on the same database:

* every write is committed before the call returns, so the next call at any replica sees it: a
  device registered at replica A authenticates at replica B; heartbeats and heads likewise;
* one endpoint has one edge id: ``add_edge`` is a single ``INSERT … ON CONFLICT (endpoint)`` on a
  unique index, so an edge re-registering (at any replica, even at two at once) keeps its id;
* device ids and tokens are random (uuid4, ``secrets``), so replicas never hand out the same one.

Transport-free: the servicer calls these methods; tests call them directly. A bad ``db`` (not a
path nor a postgresql URL, the driver missing, the server out of reach) raises
:class:`~ecd.errors.ConfigError` naming ``db``; a password in the URL is never shown.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecd.errors import ConfigError, UnavailableError
from cloud_server.campaigns import NEUTRAL_REPUTATION
from ecd.types import Split

# One schema for both dialects: DOUBLE PRECISION is an 8-byte float in PostgreSQL (its REAL is only
# 4 bytes, too coarse for a unix time) and has REAL affinity in SQLite, as the columns always had.
SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    radio TEXT NOT NULL,
    w_energy DOUBLE PRECISION NOT NULL,
    w_privacy DOUBLE PRECISION NOT NULL,
    min_split INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    split_device INTEGER NOT NULL,
    split_edge INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    reputation DOUBLE PRECISION NOT NULL DEFAULT 2.0361,
    registered_unix DOUBLE PRECISION NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    last_seen_unix DOUBLE PRECISION NOT NULL DEFAULT 0,
    sensors TEXT NOT NULL DEFAULT '{}',
    revoked_unix DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS edges (
    edge_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    capacity DOUBLE PRECISION NOT NULL,
    load DOUBLE PRECISION NOT NULL DEFAULT 0,
    queue_depth INTEGER NOT NULL DEFAULT 0,
    last_seen_unix DOUBLE PRECISION NOT NULL,
    lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    activation_cost DOUBLE PRECISION NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS edges_endpoint ON edges (endpoint);
CREATE TABLE IF NOT EXISTS heads (
    model_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    added_unix DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (model_id, name)
);
CREATE TABLE IF NOT EXISTS locations (
    device_id TEXT NOT NULL,
    unix_ms BIGINT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS locations_device ON locations (device_id, unix_ms);
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id TEXT PRIMARY KEY,
    report TEXT NOT NULL,
    created_unix DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    campaign_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    cell INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    reading DOUBLE PRECISION,
    label TEXT,
    PRIMARY KEY (campaign_id, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_device ON tasks (device_id, answered);
CREATE TABLE IF NOT EXISTS placements (
    version INTEGER PRIMARY KEY,
    report TEXT NOT NULL,
    computed_unix DOUBLE PRECISION NOT NULL
);
"""

# Columns added after the first release: (table, column, type); an older file gains them on open.
ADDED_COLUMNS = (
    ("devices", "lat", "DOUBLE PRECISION"),
    ("devices", "lon", "DOUBLE PRECISION"),
    ("edges", "lat", "DOUBLE PRECISION"),
    ("edges", "lon", "DOUBLE PRECISION"),
    ("edges", "activation_cost", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
    ("devices", "last_seen_unix", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
    ("devices", "sensors", "TEXT NOT NULL DEFAULT '{}'"),
    ("edges", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("devices", "revoked_unix", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SCHEMA_LOCK = 0x3ECD  # PostgreSQL advisory lock: replicas starting together create the tables once
EDGE_COLUMNS = "edge_id, endpoint, capacity, load, queue_depth, last_seen_unix, lat, lon, activation_cost, owner"


REVOKED = "revoked"  # a stored token no presented token matches


def hash_token(token: str) -> str:
    """What the registry stores of a device token: its SHA-256 (tokens are 128 random bits, so a
    plain hash suffices; a stolen database gives no usable token)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_matches(stored: str, presented: str) -> bool:
    """Constant-time comparison of a presented token with the stored hash (or, for a registry
    written before tokens were hashed, with the stored token)."""
    if stored == REVOKED:
        return False
    if stored.startswith("sha256:"):
        return hmac.compare_digest(stored, hash_token(presented))
    return hmac.compare_digest(stored.encode(), presented.encode())


def _private_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (SQLite gives its -wal and -shm files the
    database file's mode); an existing file is left as its owner set it."""
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        pass  # SQLite's own open names the problem (ConfigError below)


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
    reputation: float = NEUTRAL_REPUTATION  # until a campaign scores the device (cloud_server.campaigns)
    lat: float | None = None  # the last reported position; None = unknown
    lon: float | None = None
    sensors: str = "{}"  # JSON: sensor -> benchmark score 0..10, as the device registered them

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
    lat: float | None = None  # None = no position registered
    lon: float | None = None
    activation_cost: float = 0.0  # 0 = the cloud's default
    owner: str = ""  # the edge certificate's name that registered the endpoint ("" = plaintext, unbound)


DEVICE_COLUMNS = tuple(DeviceRecord.__dataclass_fields__)


def is_postgres_url(db: str) -> bool:
    return db.startswith(POSTGRES_SCHEMES)


def redact(url: str) -> str:
    """The URL as it may be shown: a password (``user:pw@`` or ``?password=``) becomes ``***``."""
    url = re.sub(r"(://[^/?#@:]*):[^/?#@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)


def _one_line(error: BaseException, secret: str | None) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text.replace(secret, "***") if secret else text


def _postgres_params(url: str) -> dict[str, Any]:
    """The URL's connection parameters, checked: the driver is there and the URL parses.

    The driver is psycopg 3: the maintained PostgreSQL adapter, with binary wheels for every
    platform a cloud server runs on (``psycopg[binary]``: no compiler, no libpq to install) and a
    thread-safe connection; SQLAlchemy would add an engine and ORM layer that a dozen queries do
    not need. Imported here, only when a postgresql URL is given: it is in the ``cloud`` extra, not
    in the runtime.
    """
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            f"db: {redact(url)} needs the PostgreSQL driver psycopg: pip install 'ecd-runtime[cloud]'"
        ) from None
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as e:
        raise ConfigError(f"db: not a valid postgresql URL {redact(url)}: {_one_line(e, None)}") from None
    params.setdefault("connect_timeout", 10)  # an unreachable host fails in seconds, not minutes
    return params


class Registry:
    """Thread-safe; every write is committed before the call returns.

    ``path`` is a SQLite file or a postgresql URL (see the module docstring); ``self.path`` is what
    may be shown of it (a password masked).
    """

    def __init__(self, path: str | Path):
        db = str(path)
        self._lock = threading.Lock()
        self._url = db if is_postgres_url(db) else None
        if self._url is not None:
            self.path = redact(db)
            self._params = _postgres_params(db)
            import psycopg

            try:
                self._db = psycopg.connect(**self._params, autocommit=True)  # each statement commits
            except psycopg.Error as e:
                raise ConfigError(f"db: cannot connect to {self.path}: {self._reason(e)}") from None
            try:
                self._create_schema_postgres()
            except psycopg.Error as e:
                self._db.close()
                raise ConfigError(f"db: cannot create the registry's tables in {self.path}: {self._reason(e)}") from None
            return
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", db):
            raise ConfigError(f"db: expected a SQLite file or a postgresql:// URL, got {redact(db)!r}")
        self.path = db
        try:
            _private_file(db)
            self._db = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            for table, column, kind in ADDED_COLUMNS:  # before the schema: its indexes may use them
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if have and column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise ConfigError(f"db: cannot open the SQLite file {db}: {e}") from None

    def _reason(self, error: BaseException) -> str:
        return _one_line(error, self._params.get("password") if self._url else None)

    def _create_schema_postgres(self) -> None:
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in filter(str.strip, SCHEMA.split(";")):
                self._db.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- one statement, either dialect -------------------------------------------------------

    def _execute(self, sql: str, params: tuple | list) -> tuple[list[tuple], int]:
        """Run one statement written with ``?`` placeholders; its rows and row count."""
        with self._lock:
            if self._url is None:
                cur = self._db.execute(sql, params)
                return cur.fetchall(), cur.rowcount
            import psycopg

            try:
                if self._db.broken:  # the server restarted or the link broke: open a fresh one
                    self._db = psycopg.connect(**self._params, autocommit=True)
                cur = self._db.execute(sql.replace("?", "%s"), params)
                return (cur.fetchall() if cur.description else []), cur.rowcount
            except psycopg.OperationalError as e:
                raise UnavailableError(f"db: {self.path}: {self._reason(e)}") from None

    def _execute_many(self, sql: str, rows: list[tuple]) -> None:
        """One statement for many rows, in one transaction (a placement or a campaign writes thousands)."""
        if not rows:
            return
        with self._lock:
            if self._url is None:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(sql, rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                return
            import psycopg

            try:
                if self._db.broken:
                    self._db = psycopg.connect(**self._params, autocommit=True)
                with self._db.transaction(), self._db.cursor() as cur:
                    cur.executemany(sql.replace("?", "%s"), rows)
            except psycopg.OperationalError as e:
                raise UnavailableError(f"db: {self.path}: {self._reason(e)}") from None

    def _rows(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        return self._execute(sql, params)[0]

    # --- devices -----------------------------------------------------------------------------

    def add_device(self, token: str = "", **fields) -> DeviceRecord:
        """A new device; ``token`` is what to store (the cloud passes :func:`hash_token` of the
        device's token; empty = a random one)."""
        record = DeviceRecord(device_id=uuid.uuid4().hex[:12], token=token or secrets.token_hex(16), **fields)
        self._execute(
            f"INSERT INTO devices ({', '.join(DEVICE_COLUMNS)}, registered_unix, last_seen_unix) "
            f"VALUES ({', '.join('?' * (len(DEVICE_COLUMNS) + 2))})",
            [getattr(record, c) for c in DEVICE_COLUMNS] + [time.time()] * 2,
        )
        return record

    def revoke_device(self, device_id: str) -> bool:
        """Revoke the device's token: no token matches a revoked record. False for an unknown device."""
        _, count = self._execute("UPDATE devices SET token = ?, revoked_unix = ? WHERE device_id = ?",
                                 (REVOKED, time.time(), device_id))
        return count == 1

    def revoked_since(self, unix: float) -> list[str]:
        """Devices revoked after ``unix`` (edge nodes learn of them with their heartbeat's answer)."""
        return [r[0] for r in self._rows("SELECT device_id FROM devices WHERE revoked_unix > ? ORDER BY device_id", (unix,))]

    def touch_device(self, device_id: str, unix: float) -> None:
        """The device was heard from (its lease runs from here)."""
        self._execute("UPDATE devices SET last_seen_unix = ? WHERE device_id = ?", (unix, device_id))

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._rows(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices WHERE device_id = ?", (device_id,))
        return DeviceRecord(*rows[0]) if rows else None

    def update_device(self, device_id: str, **fields) -> DeviceRecord:
        unknown = set(fields) - set(DEVICE_COLUMNS[2:])
        if unknown:
            raise ValueError(f"update_device: not device fields: {', '.join(sorted(unknown))}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._execute(f"UPDATE devices SET {sets} WHERE device_id = ?", [*fields.values(), device_id])
        record = self.device(device_id)
        assert record is not None
        return record

    def device_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM devices")[0][0])

    # --- edge nodes --------------------------------------------------------------------------

    def add_edge(self, endpoint: str, capacity: float, lat: float | None = None, lon: float | None = None,
                 activation_cost: float = 0.0, owner: str = "") -> EdgeRecord | None:
        """An edge re-registering from the same endpoint keeps its id (at any replica, even two at
        once). An endpoint bound to an owner (an edge certificate) is updated only by that owner:
        None when another holds it."""
        _, count = self._execute(
            f"INSERT INTO edges ({EDGE_COLUMNS}) VALUES (?, ?, ?, 0, 0, ?, ?, ?, ?, ?) "
            "ON CONFLICT (endpoint) DO UPDATE SET capacity = excluded.capacity, load = 0, queue_depth = 0, "
            "last_seen_unix = excluded.last_seen_unix, lat = excluded.lat, lon = excluded.lon, "
            "activation_cost = excluded.activation_cost, owner = excluded.owner "
            "WHERE edges.owner = excluded.owner OR edges.owner = ''",
            (uuid.uuid4().hex[:12], endpoint, capacity, time.time(), lat, lon, activation_cost, owner),
        )
        if count == 0:
            return None
        return EdgeRecord(*self._rows(f"SELECT {EDGE_COLUMNS} FROM edges WHERE endpoint = ?", (endpoint,))[0])

    def edge(self, edge_id: str) -> EdgeRecord | None:
        rows = self._rows(f"SELECT {EDGE_COLUMNS} FROM edges WHERE edge_id = ?", (edge_id,))
        return EdgeRecord(*rows[0]) if rows else None

    def edges(self) -> list[EdgeRecord]:
        return [EdgeRecord(*r) for r in self._rows(f"SELECT {EDGE_COLUMNS} FROM edges ORDER BY edge_id")]

    def heartbeat(self, edge_id: str, load: float, queue_depth: int) -> bool:
        _, count = self._execute(
            "UPDATE edges SET load = ?, queue_depth = ?, last_seen_unix = ? WHERE edge_id = ?",
            (load, queue_depth, time.time(), edge_id),
        )
        return count == 1

    def remove_edge(self, edge_id: str) -> bool:
        """An edge node that leaves: kept (its id stays its endpoint's), but no longer alive."""
        _, count = self._execute("UPDATE edges SET last_seen_unix = 0 WHERE edge_id = ?", (edge_id,))
        return count == 1

    def devices(self, seen_since: float = 0.0) -> list[DeviceRecord]:
        """Every device, or those heard from since ``seen_since`` (unix seconds): the live ones."""
        rows = self._rows(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices WHERE last_seen_unix >= ? "
                          "ORDER BY registered_unix, device_id", (seen_since,))
        return [DeviceRecord(*r) for r in rows]

    def device_activity(self, limit: int, device_id: str | None = None) -> list[tuple[DeviceRecord, float, float, float]]:
        """(record, registered, last seen, revoked — unix seconds, 0 = never) of at most ``limit``
        devices, oldest registered first, or of ``device_id`` alone: what the operator view shows,
        bounded by the database rather than after reading every row."""
        where, params = ("WHERE device_id = ? ", [device_id]) if device_id is not None else ("", [])
        rows = self._rows(f"SELECT {', '.join(DEVICE_COLUMNS)}, registered_unix, last_seen_unix, revoked_unix FROM devices "
                          f"{where}ORDER BY registered_unix, device_id LIMIT ?", [*params, max(0, int(limit))])
        n = len(DEVICE_COLUMNS)
        return [(DeviceRecord(*r[:n]), float(r[n]), float(r[n + 1]), float(r[n + 2])) for r in rows]

    def set_device_edges(self, mapping: dict[str, str]) -> None:
        """Move devices to edges (device id -> edge id), as one placement decided."""
        self._execute_many("UPDATE devices SET edge_id = ? WHERE device_id = ?",
                           [(edge_id, device_id) for device_id, edge_id in mapping.items()])

    def record_location(self, device_id: str, lat: float, lon: float, unix_ms: int) -> None:
        """A device's position: appended to its trace, and kept as its current one."""
        self._execute("INSERT INTO locations (device_id, unix_ms, lat, lon) VALUES (?, ?, ?, ?)", (device_id, unix_ms, lat, lon))
        self._execute("UPDATE devices SET lat = ?, lon = ? WHERE device_id = ?", (lat, lon, device_id))

    def put_campaign(self, campaign_id: str, report: dict) -> None:
        self._execute(
            "INSERT INTO campaigns (campaign_id, report, created_unix) VALUES (?, ?, ?) "
            "ON CONFLICT (campaign_id) DO UPDATE SET report = excluded.report",
            (campaign_id, json.dumps(report), time.time()),
        )

    def campaign(self, campaign_id: str) -> dict | None:
        rows = self._rows("SELECT report FROM campaigns WHERE campaign_id = ?", (campaign_id,))
        return json.loads(rows[0][0]) if rows else None

    def campaigns(self, limit: int) -> list[dict]:
        """The stored reports of at most ``limit`` campaigns, newest first (the operator view)."""
        rows = self._rows("SELECT report FROM campaigns ORDER BY created_unix DESC, campaign_id LIMIT ?", (max(0, int(limit)),))
        return [json.loads(r[0]) for r in rows]

    def campaign_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) FROM campaigns")[0][0])

    def add_tasks(self, campaign_id: str, tasks: list[tuple[int, str, int, int]]) -> None:
        """(task id, device id, cell, slot) for each task of a new campaign."""
        self._execute_many("INSERT INTO tasks (campaign_id, task_id, device_id, cell, slot) VALUES (?, ?, ?, ?, ?)",
                           [(campaign_id, *t) for t in tasks])

    def pending_tasks(self, device_id: str) -> list[tuple[str, int, int, int]]:
        """(campaign id, task id, cell, slot) of the device's unanswered tasks."""
        rows = self._rows("SELECT campaign_id, task_id, cell, slot FROM tasks WHERE device_id = ? AND answered = 0 "
                          "ORDER BY campaign_id, slot, task_id", (device_id,))
        return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def answer_task(self, campaign_id: str, task_id: int, device_id: str, reading: float, label: str) -> str:
        """Store a task's result: "new"; "again" for a task this device already answered (a resent
        frame); "not yours" when the campaign has no such task for this device."""
        _, count = self._execute(
            "UPDATE tasks SET answered = 1, reading = ?, label = ? WHERE campaign_id = ? AND task_id = ? "
            "AND device_id = ? AND answered = 0",
            (reading, label, campaign_id, task_id, device_id),
        )
        if count == 1:
            return "new"
        rows = self._rows("SELECT 1 FROM tasks WHERE campaign_id = ? AND task_id = ? AND device_id = ?",
                          (campaign_id, task_id, device_id))
        return "again" if rows else "not yours"

    def unanswered(self, campaign_id: str) -> int:
        return int(self._rows("SELECT COUNT(*) FROM tasks WHERE campaign_id = ? AND answered = 0", (campaign_id,))[0][0])

    def tasks(self, campaign_id: str) -> list[tuple[int, str, int, int, bool, float | None, str | None]]:
        """(task id, device id, cell, slot, answered, reading, label) of every task of a campaign."""
        rows = self._rows("SELECT task_id, device_id, cell, slot, answered, reading, label FROM tasks "
                          "WHERE campaign_id = ? ORDER BY task_id", (campaign_id,))
        return [(int(r[0]), r[1], int(r[2]), int(r[3]), bool(r[4]), r[5], r[6]) for r in rows]

    def set_reputations(self, reputations: dict[str, float]) -> None:
        self._execute_many("UPDATE devices SET reputation = ? WHERE device_id = ?",
                           [(float(v), device_id) for device_id, v in reputations.items()])

    def locations(self) -> dict[str, list[tuple[float, float]]]:
        """Every device's trace as (lat, lon) points, oldest first."""
        out: dict[str, list[tuple[float, float]]] = {}
        for device_id, lat, lon in self._rows("SELECT device_id, lat, lon FROM locations ORDER BY device_id, unix_ms"):
            out.setdefault(device_id, []).append((float(lat), float(lon)))
        return out

    def put_placement(self, report: dict) -> None:
        self._execute(
            "INSERT INTO placements (version, report, computed_unix) VALUES (?, ?, ?) "
            "ON CONFLICT (version) DO UPDATE SET report = excluded.report, computed_unix = excluded.computed_unix",
            (int(report["version"]), json.dumps(report), time.time()),
        )

    def latest_placement(self) -> dict | None:
        rows = self._rows("SELECT report FROM placements ORDER BY version DESC LIMIT 1")
        return json.loads(rows[0][0]) if rows else None

    def devices_per_edge(self, seen_since: float = 0.0) -> dict[str, int]:
        rows = self._rows("SELECT edge_id, COUNT(*) FROM devices WHERE last_seen_unix >= ? GROUP BY edge_id", (seen_since,))
        return {r[0]: int(r[1]) for r in rows}

    # --- task heads --------------------------------------------------------------------------

    def put_head(self, model_id: str, name: str, spec: dict) -> None:
        self._execute(
            "INSERT INTO heads (model_id, name, spec, added_unix) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (model_id, name) DO UPDATE SET spec = excluded.spec, added_unix = excluded.added_unix",
            (model_id, name, json.dumps(spec), time.time()),
        )

    def heads(self, model_id: str) -> list[dict]:
        rows = self._rows("SELECT spec FROM heads WHERE model_id = ? ORDER BY added_unix, name", (model_id,))
        return [json.loads(r[0]) for r in rows]
