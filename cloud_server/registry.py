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

One storage layer for both: SQLAlchemy Core expressions over the tables of
:mod:`cloud_server.registry_schema` (which also migrates a database on open), on the engine
:mod:`cloud_server.registry_db` opens. Rows come back as typed records (NamedTuples where a caller
unpacks them like the tuples they replace). Time is read from the injected ``clock`` only.

Transport-free: the servicer calls these methods; tests call them directly. A bad ``db`` (not a
path nor a postgresql URL, the driver missing, a database from a newer release) raises
:class:`~ecd.errors.ConfigError` naming ``db``, a server out of reach :class:`~ecd.errors.UnavailableError`;
a password in the URL is never shown.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Insert, Table, and_, bindparam, func, or_, select
from sqlalchemy.exc import DBAPIError, OperationalError

from cloud_server import registry_leader, registry_schema as schema
from cloud_server.registry_db import (  # noqa: F401 (re-exported: the registry's public helpers)
    POSTGRES_SCHEMES, _one_line, _postgres_params, _private_file, is_postgres_url, postgres_engine, redact,
    sqlite_engine,
)
from cloud_server.registry_records import (  # noqa: F401 (re-exported: callers import them from here)
    DEVICE_COLUMNS, EDGE_COLUMNS, REVOKED, Answer, DeviceActivity, DeviceRecord, EdgeRecord, PendingTask, TaskRow,
    TracePoint, hash_token, token_matches,
)
from cloud_server.registry_leader import Fence
from cloud_server.registry_schema import NewerSchemaError
from cloud_server.registry_storage import RegistryFullError, Storage, StorageState, is_disk_full  # noqa: F401
from ecd.errors import ConfigError, UnavailableError


def _device(row) -> DeviceRecord:
    return DeviceRecord(*row[:len(DEVICE_COLUMNS)])


def _edge(row) -> EdgeRecord:
    return EdgeRecord(*row[:len(EDGE_COLUMNS)])


_DEVICE_COLS = [schema.devices.c[c] for c in DEVICE_COLUMNS]
_EDGE_COLS = [schema.edges.c[c] for c in EDGE_COLUMNS]


class Registry:
    """Thread-safe; every write is committed before the call returns.

    ``path`` is a SQLite file or a postgresql URL (see the module docstring); ``self.path`` is what
    may be shown of it (a password masked). ``clock`` gives the unix time stored with each write.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        db = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._secret: str | None = None
        self.storage = Storage(redact(db) if is_postgres_url(db) else db)  # the write path: full or not
        if is_postgres_url(db):
            self.path = redact(db)
            params = _postgres_params(db)
            self._secret = params.get("password")
            self._engine = postgres_engine(params)
            try:
                self._engine.connect().close()
            except DBAPIError as e:
                # unreachable: a wrong address or a database that is down; retried by a supervisor (exit 69)
                raise UnavailableError(f"db: cannot connect to {self.path}: {self._reason(e)}") from None
            self._migrate("cannot create the registry's tables in")
        else:
            self.path = db
            self._engine = sqlite_engine(db)
            self._migrate("cannot open the SQLite file")

    def _migrate(self, failing: str) -> None:
        try:
            with self._engine.begin() as conn:
                schema.migrate(conn)
        except NewerSchemaError as e:
            self._engine.dispose()
            raise ConfigError(f"db: cannot open {self.path}: {e}") from None
        except DBAPIError as e:
            self._engine.dispose()
            raise ConfigError(f"db: {failing} {self.path}: {self._reason(e)}") from None

    def _reason(self, error: BaseException) -> str:
        cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
        return _one_line(cause, self._secret)

    def close(self) -> None:
        """Close the database for good: a call still in flight (a handler the server's pool runs
        after the server stopped) is refused, instead of the engine opening the file again, which
        would recreate a SQLite file its owner is removing."""
        with self._lock:
            self._closed = True
            self._engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction, committed on leaving (rolled back on an error): a lost PostgreSQL
        connection is an UnavailableError naming db, and the pool opens a fresh one next time."""
        with self._lock:
            if self._closed:
                raise UnavailableError(f"db: {self.path}: the registry is closed (the cloud server is stopping)")
            try:
                with self._engine.begin() as conn:
                    yield conn
            except OperationalError as e:
                if is_disk_full(e):
                    raise self.storage.full(self._reason(e)) from None
                if self._engine.dialect.name == "sqlite":  # a file has no connection to lose: a real error
                    raise
                raise UnavailableError(f"db: {self.path}: {self._reason(e)}") from None

    def _run(self, statement, params=None):
        """One statement in its own transaction; its rows (if any) and row count."""
        with self._transaction() as conn:
            result = conn.execute(statement, params) if params is not None else conn.execute(statement)
            return (result.all() if result.returns_rows else []), result.rowcount

    def probe_write(self) -> None:
        """A no-op write asked while the storage is full, to see space come back (:meth:`Storage.probed`)."""
        with contextlib.suppress(RegistryFullError):
            self._run(schema.schema_version.update().values(version=schema.schema_version.c.version))
            self.storage.probed()

    def _rows(self, statement) -> list:
        return self._run(statement)[0]

    def _upsert(self, table: Table, values: dict) -> Insert:
        """INSERT … ON CONFLICT: SQL core has no portable upsert, so each dialect's own insert()
        builds it (both spell it alike; only the construct's module differs)."""
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).values(values)

    # --- devices -----------------------------------------------------------------------------

    def add_device(self, token: str = "", **fields) -> DeviceRecord:
        """A new device; ``token`` is what to store (the cloud passes :func:`hash_token` of the
        device's token; empty = a random one)."""
        record = DeviceRecord(device_id=uuid.uuid4().hex[:12], token=token or secrets.token_hex(16), **fields)
        now = self._clock()
        self._run(schema.devices.insert().values(
            {**{c: getattr(record, c) for c in DEVICE_COLUMNS}, "registered_unix": now, "last_seen_unix": now}))
        return record

    def revoke_device(self, device_id: str) -> bool:
        """Revoke the device's token: no token matches a revoked record. False for an unknown device."""
        d = schema.devices
        _, count = self._run(d.update().where(d.c.device_id == device_id).values(token=REVOKED, revoked_unix=self._clock()))
        return count == 1

    def holder_revoked(self, holder: str) -> bool:
        """Whether a device registered with certificate ``holder`` was revoked (it stays out)."""
        d = schema.devices
        return bool(self._rows(select(d.c.device_id).where(d.c.holder == holder, d.c.token == REVOKED).limit(1)))

    def revoked_since(self, unix: float) -> list[str]:
        """Devices revoked after ``unix`` (edge nodes learn of them with their heartbeat's answer)."""
        d = schema.devices
        return [r[0] for r in self._rows(select(d.c.device_id).where(d.c.revoked_unix > unix).order_by(d.c.device_id))]

    def touch_device(self, device_id: str, unix: float) -> None:
        """The device was heard from (its lease runs from here)."""
        d = schema.devices
        self._run(d.update().where(d.c.device_id == device_id).values(last_seen_unix=unix))

    def device(self, device_id: str) -> DeviceRecord | None:
        rows = self._rows(select(*_DEVICE_COLS).where(schema.devices.c.device_id == device_id))
        return _device(rows[0]) if rows else None

    def update_device(self, device_id: str, **fields) -> DeviceRecord:
        unknown = set(fields) - set(DEVICE_COLUMNS[2:])
        if unknown:
            raise ValueError(f"update_device: not device fields: {', '.join(sorted(unknown))}")
        d = schema.devices
        self._run(d.update().where(d.c.device_id == device_id).values(fields))
        record = self.device(device_id)
        assert record is not None
        return record

    def device_count(self) -> int:
        return int(self._rows(select(func.count()).select_from(schema.devices))[0][0])

    def devices(self, seen_since: float = 0.0) -> list[DeviceRecord]:
        """Every device, or those heard from since ``seen_since`` (unix seconds): the live ones."""
        d = schema.devices
        rows = self._rows(select(*_DEVICE_COLS).where(d.c.last_seen_unix >= seen_since)
                          .order_by(d.c.registered_unix, d.c.device_id))
        return [_device(r) for r in rows]

    def device_activity(self, limit: int, device_id: str | None = None) -> list[DeviceActivity]:
        """(record, registered, last seen, revoked — unix seconds, 0 = never) of at most ``limit``
        devices, oldest registered first, or of ``device_id`` alone: what the operator view shows,
        bounded by the database rather than after reading every row."""
        d = schema.devices
        query = select(*_DEVICE_COLS, d.c.registered_unix, d.c.last_seen_unix, d.c.revoked_unix)
        if device_id is not None:
            query = query.where(d.c.device_id == device_id)
        rows = self._rows(query.order_by(d.c.registered_unix, d.c.device_id).limit(max(0, int(limit))))
        n = len(DEVICE_COLUMNS)
        return [DeviceActivity(_device(r), float(r[n]), float(r[n + 1]), float(r[n + 2])) for r in rows]

    def devices_per_edge(self, seen_since: float = 0.0) -> dict[str, int]:
        d = schema.devices
        rows = self._rows(select(d.c.edge_id, func.count()).where(d.c.last_seen_unix >= seen_since).group_by(d.c.edge_id))
        return {r[0]: int(r[1]) for r in rows}

    def _update_many(self, column: str, values: dict[str, object]) -> None:
        """Set one device column for many devices, in one transaction (a placement writes thousands)."""
        if not values:
            return
        d = schema.devices
        statement = d.update().where(d.c.device_id == bindparam("_id")).values({column: bindparam("_v")})
        self._run(statement, [{"_id": k, "_v": v} for k, v in values.items()])

    def set_device_edges(self, mapping: dict[str, str]) -> None:
        """Move devices to edges (device id -> edge id), as one placement decided."""
        self._update_many("edge_id", mapping)

    def set_reputations(self, reputations: dict[str, float]) -> None:
        self._update_many("reputation", {k: float(v) for k, v in reputations.items()})

    def record_location(self, device_id: str, lat: float, lon: float, unix_ms: int) -> None:
        """A device's position: appended to its trace, and kept as its current one."""
        d = schema.devices
        with self._transaction() as conn:
            conn.execute(schema.locations.insert().values(device_id=device_id, unix_ms=unix_ms, lat=lat, lon=lon))
            conn.execute(d.update().where(d.c.device_id == device_id).values(lat=lat, lon=lon))

    def locations(self) -> dict[str, list[TracePoint]]:
        """Every device's trace as (lat, lon) points, oldest first."""
        loc = schema.locations
        out: dict[str, list[TracePoint]] = {}
        for device_id, lat, lon in self._rows(select(loc.c.device_id, loc.c.lat, loc.c.lon)
                                              .order_by(loc.c.device_id, loc.c.unix_ms)):
            out.setdefault(device_id, []).append(TracePoint(float(lat), float(lon)))
        return out

    # --- edge nodes --------------------------------------------------------------------------

    def add_edge(self, endpoint: str, capacity: float, lat: float | None = None, lon: float | None = None,
                 activation_cost: float = 0.0, owner: str = "") -> EdgeRecord | None:
        """An edge re-registering from the same endpoint keeps its id (at any replica, even two at
        once). An endpoint bound to an owner (an edge certificate) is updated only by that owner:
        None when another holds it."""
        e = schema.edges
        insert = self._upsert(e, dict(edge_id=uuid.uuid4().hex[:12], endpoint=endpoint, capacity=capacity, load=0,
                                      queue_depth=0, last_seen_unix=self._clock(), lat=lat, lon=lon,
                                      activation_cost=activation_cost, owner=owner))
        new = insert.excluded
        statement = insert.on_conflict_do_update(
            index_elements=[e.c.endpoint],
            set_=dict(capacity=new.capacity, load=0, queue_depth=0, last_seen_unix=new.last_seen_unix, lat=new.lat,
                      lon=new.lon, activation_cost=new.activation_cost, owner=new.owner),
            where=or_(e.c.owner == new.owner, e.c.owner == ""),
        )
        rows = self._rows(statement.returning(*_EDGE_COLS))  # no row: the endpoint is another owner's
        return _edge(rows[0]) if rows else None

    def edge(self, edge_id: str) -> EdgeRecord | None:
        rows = self._rows(select(*_EDGE_COLS).where(schema.edges.c.edge_id == edge_id))
        return _edge(rows[0]) if rows else None

    def edges(self) -> list[EdgeRecord]:
        return [_edge(r) for r in self._rows(select(*_EDGE_COLS).order_by(schema.edges.c.edge_id))]

    def heartbeat(self, edge_id: str, load: float, queue_depth: int) -> bool:
        e = schema.edges
        _, count = self._run(e.update().where(e.c.edge_id == edge_id)
                             .values(load=load, queue_depth=queue_depth, last_seen_unix=self._clock()))
        return count == 1

    def remove_edge(self, edge_id: str) -> bool:
        """An edge node that leaves: kept (its id stays its endpoint's), but no longer alive."""
        e = schema.edges
        _, count = self._run(e.update().where(e.c.edge_id == edge_id).values(last_seen_unix=0))
        return count == 1

    # --- campaigns and their tasks -----------------------------------------------------------

    def put_campaign(self, campaign_id: str, report: dict) -> None:
        insert = self._upsert(schema.campaigns, dict(campaign_id=campaign_id, report=json.dumps(report),
                                                     created_unix=self._clock()))
        self._run(insert.on_conflict_do_update(index_elements=["campaign_id"], set_=dict(report=insert.excluded.report)))

    def campaign(self, campaign_id: str) -> dict | None:
        c = schema.campaigns
        rows = self._rows(select(c.c.report).where(c.c.campaign_id == campaign_id))
        return json.loads(rows[0][0]) if rows else None

    def campaigns(self, limit: int) -> list[dict]:
        """The stored reports of at most ``limit`` campaigns, newest first (the operator view)."""
        c = schema.campaigns
        rows = self._rows(select(c.c.report).order_by(c.c.created_unix.desc(), c.c.campaign_id).limit(max(0, int(limit))))
        return [json.loads(r[0]) for r in rows]

    def campaign_count(self) -> int:
        return int(self._rows(select(func.count()).select_from(schema.campaigns))[0][0])

    def add_tasks(self, campaign_id: str, tasks: list[tuple[int, str, int, int]]) -> None:
        """(task id, device id, cell, slot) for each task of a new campaign, in one transaction."""
        if tasks:
            self._run(schema.tasks.insert(), [dict(campaign_id=campaign_id, task_id=t, device_id=d, cell=c, slot=s)
                                              for t, d, c, s in tasks])

    def pending_tasks(self, device_id: str) -> list[PendingTask]:
        """(campaign id, task id, cell, slot) of the device's unanswered tasks."""
        t = schema.tasks
        rows = self._rows(select(t.c.campaign_id, t.c.task_id, t.c.cell, t.c.slot)
                          .where(t.c.device_id == device_id, t.c.answered == 0).order_by(t.c.campaign_id, t.c.slot, t.c.task_id))
        return [PendingTask(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def answer_task(self, campaign_id: str, task_id: int, device_id: str, reading: float, label: str) -> Answer:
        """Store a task's result (see :class:`Answer`)."""
        t = schema.tasks
        this = and_(t.c.campaign_id == campaign_id, t.c.task_id == task_id, t.c.device_id == device_id)
        with self._transaction() as conn:
            if conn.execute(t.update().where(this, t.c.answered == 0).values(answered=1, reading=reading, label=label)).rowcount == 1:
                return Answer.NEW
            return Answer.AGAIN if conn.execute(select(t.c.task_id).where(this)).first() else Answer.NOT_YOURS

    def unanswered(self, campaign_id: str) -> int:
        t = schema.tasks
        return int(self._rows(select(func.count()).where(t.c.campaign_id == campaign_id, t.c.answered == 0))[0][0])

    def tasks(self, campaign_id: str) -> list[TaskRow]:
        """(task id, device id, cell, slot, answered, reading, label) of every task of a campaign."""
        t = schema.tasks
        rows = self._rows(select(t.c.task_id, t.c.device_id, t.c.cell, t.c.slot, t.c.answered, t.c.reading, t.c.label)
                          .where(t.c.campaign_id == campaign_id).order_by(t.c.task_id))
        return [TaskRow(int(r[0]), r[1], int(r[2]), int(r[3]), bool(r[4]), r[5], r[6]) for r in rows]

    # --- placements and task heads -----------------------------------------------------------

    def add_placement(self, report: dict, fence: Fence) -> int:
        """Store the next placement, numbered here, if ``fence`` still holds the scheduler lease
        (else :class:`~cloud_server.registry_leader.LeaseLostError`); its version."""
        with self._transaction() as conn:
            return registry_leader.add_placement(conn, report, fence, self._clock())

    def latest_placement(self) -> dict | None:
        p = schema.placements
        rows = self._rows(select(p.c.report).order_by(p.c.version.desc()).limit(1))
        return json.loads(rows[0][0]) if rows else None

    # --- the scheduler lease (leader election among replicas: registry_leader) --------------------

    def hold_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Renew, take (if expired) or create lease ``name`` for ``holder``: the term held, or None."""
        with self._transaction() as conn:
            return registry_leader.hold(conn, name, holder, ttl_s, self._clock())

    def release_lease(self, name: str, holder: str) -> bool:
        with self._transaction() as conn:
            return registry_leader.release(conn, name, holder)

    def lease_holder(self, name: str) -> str:
        with self._transaction() as conn:
            return registry_leader.holder_of(conn, name, self._clock())

    def put_head(self, model_id: str, name: str, spec: dict) -> None:
        insert = self._upsert(schema.heads, dict(model_id=model_id, name=name, spec=json.dumps(spec), added_unix=self._clock()))
        new = insert.excluded
        self._run(insert.on_conflict_do_update(index_elements=["model_id", "name"],
                                               set_=dict(spec=new.spec, added_unix=new.added_unix)))

    def heads(self, model_id: str) -> list[dict]:
        h = schema.heads
        rows = self._rows(select(h.c.spec).where(h.c.model_id == model_id).order_by(h.c.added_unix, h.c.name))
        return [json.loads(r[0]) for r in rows]
