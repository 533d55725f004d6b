"""The registry's tables, declared once for SQLite and PostgreSQL, and their versioned migrations.

Why numbered steps and not Alembic: the schema is seven tables that change a column at a time, and
it must upgrade itself when a cloud server opens its database (no operator runs a migration tool
beside a Raspberry-Pi-sized deployment). Alembic would bring a migration environment, a script
directory and its own version table for what is here a list of functions; SQLAlchemy Core (already
the storage layer) gives everything one step needs.

How it works: ``schema_version`` holds one row, the version of the schema in this database.

* an empty database gets :data:`METADATA` as it is (``create_all``) and is stamped :data:`VERSION`;
* a database with the registry's tables and no ``schema_version`` is version 0 (written before
  migrations were versioned, up to commit 0f84f06): the steps from 1 on bring it up, rows kept;
* a database at version v runs the steps after v; one newer than :data:`VERSION` is refused
  (:class:`NewerSchemaError`), since this code would misread it.

A later change to a table edits :data:`METADATA` *and* appends a step that brings version
``VERSION`` to ``VERSION + 1`` in place (``ALTER TABLE``), so that both paths end at the same schema.
PostgreSQL replicas that open one database together migrate it once: the migration holds an
advisory lock for its transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger, Column, Connection, Double, Index, Integer, MetaData, PrimaryKeyConstraint, Table, Text, func,
    inspect, select, text,
)
from sqlalchemy.schema import CreateColumn

from cloud_server.campaigns import NEUTRAL_REPUTATION

SCHEMA_LOCK = 0x3ECD  # PostgreSQL advisory lock: replicas starting together migrate once

METADATA = MetaData()

# Double: DOUBLE PRECISION in PostgreSQL (its REAL is 4 bytes, too coarse for a unix time) and REAL
# affinity in SQLite, as the columns always had.
devices = Table(
    "devices", METADATA,
    Column("device_id", Text, primary_key=True),
    Column("token", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("profile", Text, nullable=False),
    Column("radio", Text, nullable=False),
    Column("w_energy", Double, nullable=False),
    Column("w_privacy", Double, nullable=False),
    Column("min_split", Integer, nullable=False),
    Column("model_id", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("split_device", Integer, nullable=False),
    Column("split_edge", Integer, nullable=False),
    Column("encoding", Text, nullable=False),
    Column("edge_id", Text, nullable=False),
    Column("reputation", Double, nullable=False, server_default=text(str(NEUTRAL_REPUTATION))),
    Column("registered_unix", Double, nullable=False),
    Column("lat", Double),
    Column("lon", Double),
    Column("last_seen_unix", Double, nullable=False, server_default=text("0")),
    Column("sensors", Text, nullable=False, server_default=text("'{}'")),
    Column("revoked_unix", Double, nullable=False, server_default=text("0")),
    Column("holder", Text, nullable=False, server_default=text("''")),
    Index("devices_holder", "holder"),
)

edges = Table(
    "edges", METADATA,
    Column("edge_id", Text, primary_key=True),
    Column("endpoint", Text, nullable=False),
    Column("capacity", Double, nullable=False),
    Column("load", Double, nullable=False, server_default=text("0")),
    Column("queue_depth", Integer, nullable=False, server_default=text("0")),
    Column("last_seen_unix", Double, nullable=False),
    Column("lat", Double),
    Column("lon", Double),
    Column("activation_cost", Double, nullable=False, server_default=text("0")),
    Column("owner", Text, nullable=False, server_default=text("''")),
    Index("edges_endpoint", "endpoint", unique=True),  # one endpoint, one edge id (add_edge's upsert)
)

heads = Table(
    "heads", METADATA,
    Column("model_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("spec", Text, nullable=False),
    Column("added_unix", Double, nullable=False),
    PrimaryKeyConstraint("model_id", "name"),
)

locations = Table(
    "locations", METADATA,
    Column("device_id", Text, nullable=False),
    Column("unix_ms", BigInteger, nullable=False),
    Column("lat", Double, nullable=False),
    Column("lon", Double, nullable=False),
    Index("locations_device", "device_id", "unix_ms"),
)

campaigns = Table(
    "campaigns", METADATA,
    Column("campaign_id", Text, primary_key=True),
    Column("report", Text, nullable=False),
    Column("created_unix", Double, nullable=False),
)

tasks = Table(
    "tasks", METADATA,
    Column("campaign_id", Text, nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("device_id", Text, nullable=False),
    Column("cell", Integer, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("answered", Integer, nullable=False, server_default=text("0")),
    Column("reading", Double),
    Column("label", Text),
    PrimaryKeyConstraint("campaign_id", "task_id"),
    Index("tasks_device", "device_id", "answered"),
)

placements = Table(
    "placements", METADATA,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("report", Text, nullable=False),
    Column("computed_unix", Double, nullable=False),
)

# Who leads the schedulers among the replicas on one database, until when; ``term`` grows at every
# change of holder and fences the leader's writes (cloud_server/registry_leader.py).
scheduler_lease = Table(
    "scheduler_lease", METADATA,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("term", Integer, nullable=False),
    Column("expires_unix", Double, nullable=False),
)

schema_version = Table("schema_version", METADATA, Column("version", Integer, nullable=False))


class NewerSchemaError(Exception):
    """The database was migrated by a newer release than this one."""

    def __init__(self, found: int, known: int):
        super().__init__(f"its schema is version {found}, newer than this release's version {known}: "
                         "upgrade ecd-runtime (or open another database)")


def _step_1_versioned(conn: Connection) -> None:
    """Version 0 (any release up to 0f84f06, including files older than some columns) -> 1: the
    columns and tables added over those releases, each only where missing; rows are kept."""
    have = inspect(conn)
    for table in METADATA.sorted_tables:
        if table is schema_version:
            continue
        if not have.has_table(table.name):
            table.create(conn)
            continue
        present = {c["name"] for c in have.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {CreateColumn(column).compile(dialect=conn.dialect)}"))
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _step_2_scheduler_lease(conn: Connection) -> None:
    """1 -> 2: the scheduler lease (leader election among replicas). Step 1 creates every missing
    table, so a version-0 database has it already: created only where missing."""
    scheduler_lease.create(conn, checkfirst=True)


def _step_3_device_holder(conn: Connection) -> None:
    """2 -> 3: the device certificate each device registered with (tokens bound to it; a revoked
    certificate cannot register again). Rows kept, with no holder (they registered in plaintext)."""
    if "holder" not in {c["name"] for c in inspect(conn).get_columns(devices.name)}:
        conn.execute(text(f"ALTER TABLE devices ADD COLUMN {CreateColumn(devices.c.holder).compile(dialect=conn.dialect)}"))
    next(i for i in devices.indexes if i.name == "devices_holder").create(conn, checkfirst=True)


# STEPS[i] brings version i to version i + 1.
STEPS: tuple[Callable[[Connection], None], ...] = (_step_1_versioned, _step_2_scheduler_lease, _step_3_device_holder)
VERSION = len(STEPS)


def stored_version(conn: Connection) -> int | None:
    """The database's schema version: None for an empty database, 0 for one from before versions."""
    have = inspect(conn)
    if have.has_table(schema_version.name):  # empty: a start killed between its creation and its row
        version = conn.execute(select(schema_version.c.version)).scalar_one_or_none()
        return 0 if version is None else int(version)
    return 0 if have.has_table(devices.name) or have.has_table(edges.name) else None


def migrate(conn: Connection) -> int:
    """Bring the database, inside the caller's transaction, to :data:`VERSION`; the version found."""
    if conn.dialect.name == "postgresql":  # only PostgreSQL has replicas opening one database at once
        conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
    found = stored_version(conn)
    if found is None:
        METADATA.create_all(conn)
        conn.execute(schema_version.insert().values(version=VERSION))
        return 0
    if found > VERSION:
        raise NewerSchemaError(found, VERSION)
    for step in STEPS[found:]:
        step(conn)
    if found < VERSION:  # SQLite runs DDL outside the transaction: every step is idempotent, and so is this
        schema_version.create(conn, checkfirst=True)
        conn.execute(schema_version.delete())
        conn.execute(schema_version.insert().values(version=VERSION))
    return found
