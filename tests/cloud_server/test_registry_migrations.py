"""The registry's schema versions, on SQLite and on PostgreSQL (issue 28): a database written by the
release before versioned migrations (commit 0f84f06, its DDL kept in data/) upgrades in place with
its rows kept; a new one is stamped with the current version; one from a newer release is refused,
naming both versions, and left as it was."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from cloud_server import registry_schema
from cloud_server.registry import EdgeRecord, Registry
from cloud_server.registry_db import sqlite_engine
from ecd.errors import ConfigError

OLD_SCHEMA = (Path(__file__).parent / "data" / "registry_0f84f06.sql").read_text()
OLD_ROWS = (
    "INSERT INTO devices (device_id, token, name, profile, radio, w_energy, w_privacy, min_split, model_id, "
    "model_version, split_device, split_edge, encoding, edge_id, registered_unix, last_seen_unix) VALUES "
    "('d1', 'sha256:x', 'phone', 'pixel7', 'lte', 0.25, 0.75, 2, 'm', 'v1', 3, 5, 'INT8', 'e1', 1.5, 2.5)",
    "INSERT INTO edges (edge_id, endpoint, capacity, last_seen_unix, owner) VALUES ('e1', 'h:1', 2.0, 5.0, 'edge-a')",
    "INSERT INTO tasks (campaign_id, task_id, device_id, cell, slot) VALUES ('c', 1, 'd1', 4, 6)",
    "INSERT INTO heads (model_id, name, spec, added_unix) VALUES ('m', 'h', '{\"name\": \"h\"}', 1.0)",
)


def run_sql(db: str, statements: list[str] | tuple[str, ...]) -> list[tuple]:
    """Statements through the database's own driver (not the registry): the last one's rows."""
    rows: list[tuple] = []
    if db.startswith("postgresql"):
        with psycopg.connect(db, autocommit=True) as conn:
            for statement in statements:
                cur = conn.execute(statement)
                rows = cur.fetchall() if cur.description else []
        return rows
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            rows = conn.execute(statement).fetchall()
        conn.commit()
    finally:
        conn.close()
    return rows


def old_database(db: str) -> None:
    run_sql(db, [s for s in OLD_SCHEMA.split(";") if s.strip()])
    run_sql(db, OLD_ROWS)


def test_a_database_from_before_versions_upgrades_in_place_with_its_rows(db: str) -> None:
    old_database(db)
    r = Registry(db)
    try:
        d = r.device("d1")
        assert (d.name, d.split_device, d.split_edge, d.edge_id, d.sensors, d.lat) == ("phone", 3, 5, "e1", "{}", None)
        assert r.edge("e1") == EdgeRecord("e1", "h:1", 2.0, 0.0, 0, 5.0, None, None, 0.0, "edge-a")
        assert r.tasks("c") == [(1, "d1", 4, 6, False, None, None)]
        assert r.heads("m") == [{"name": "h"}]
        assert r.add_edge("h:1", 3.0, owner="edge-a").edge_id == "e1"  # the unique endpoint index still holds
    finally:
        r.close()
    assert run_sql(db, ["SELECT version FROM schema_version"]) == [(registry_schema.VERSION,)]


def test_an_upgrade_killed_halfway_is_finished_on_the_next_start(db: str) -> None:
    """kill -9 during the upgrade: where DDL is not transactional (SQLite) the version table may
    already be there with no row in it; the next start reads that as version 0 and finishes."""
    old_database(db)
    run_sql(db, ["CREATE TABLE schema_version (version INTEGER NOT NULL)"])
    r = Registry(db)
    try:
        assert r.device("d1").sensors == "{}" and r.tasks("c") == [(1, "d1", 4, 6, False, None, None)]
    finally:
        r.close()
    assert run_sql(db, ["SELECT version FROM schema_version"]) == [(registry_schema.VERSION,)]


def test_a_new_database_is_stamped_and_reopening_keeps_everything(db: str) -> None:
    r = Registry(db)
    e = r.add_edge("h:1", 1.0)
    r.close()
    assert run_sql(db, ["SELECT version FROM schema_version"]) == [(registry_schema.VERSION,)]
    again = Registry(db)
    try:
        assert again.edge(e.edge_id) == e
    finally:
        again.close()
    assert run_sql(db, ["SELECT COUNT(*) FROM schema_version"]) == [(1,)]


def test_a_database_from_a_newer_release_is_refused_naming_both_versions(db: str) -> None:
    Registry(db).close()
    newer = registry_schema.VERSION + 3
    run_sql(db, [f"UPDATE schema_version SET version = {newer}"])
    with pytest.raises(ConfigError) as e:
        Registry(db)
    assert str(e.value) == (f"db: cannot open {db}: its schema is version {newer}, newer than this release's "
                            f"version {registry_schema.VERSION}: upgrade ecd-runtime (or open another database)")
    assert run_sql(db, ["SELECT version FROM schema_version"]) == [(newer,)]  # left as it was


def test_every_step_has_a_place_and_the_version_counts_them() -> None:
    assert registry_schema.VERSION == len(registry_schema.STEPS) >= 1


def test_replicas_opening_one_new_postgresql_database_together_migrate_it_once(postgres_url: str) -> None:
    """Four cloud replicas starting at once: every one opens (the migration holds an advisory lock),
    and the database has one version row."""
    start = threading.Barrier(4)
    opened: list[Registry] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait(timeout=30)
        try:
            opened.append(Registry(postgres_url))
        except BaseException as e:  # noqa: BLE001 — reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in opened:
        r.close()
    assert errors == [] and len(opened) == 4
    assert run_sql(postgres_url, ["SELECT version FROM schema_version"]) == [(registry_schema.VERSION,)]


def test_a_database_from_before_versions_missing_tables_and_columns_gains_them_in_its_own_types(db: str) -> None:
    """Version 0 covers files older than some tables and columns: each missing one is added, in the
    database's own column types (PostgreSQL has no DOUBLE), rows kept."""
    old_database(db)
    run_sql(db, ["DROP TABLE tasks", "ALTER TABLE edges DROP COLUMN activation_cost", "ALTER TABLE devices DROP COLUMN lat"])
    r = Registry(db)
    try:
        assert r.edge("e1").activation_cost == 0.0 and r.device("d1").lat is None
        r.record_location("d1", 45.5, 9.25, 1_000)
        assert (r.device("d1").lat, r.device("d1").lon) == (45.5, 9.25)
        r.add_tasks("c", [(2, "d1", 3, 1)])
        assert r.tasks("c") == [(2, "d1", 3, 1, False, None, None)]
    finally:
        r.close()
    assert run_sql(db, ["SELECT version FROM schema_version"]) == [(registry_schema.VERSION,)]


def test_a_database_of_version_2_gains_the_device_certificate_column_and_its_index_with_its_rows(db: str) -> None:
    r = Registry(db)
    kept = r.add_device(name="cam", profile="pi4", radio="wifi", w_energy=0.5, w_privacy=0.5, min_split=1, model_id="m",
                        model_version="v1", split_device=1, split_edge=4, encoding="FLOAT32", edge_id="e")
    r.close()
    run_sql(db, ["DROP INDEX devices_holder", "ALTER TABLE devices DROP COLUMN holder", "UPDATE schema_version SET version = 2"])
    r = Registry(db)
    try:
        assert r.device(kept.device_id) == kept  # registered in plaintext: no holder
        bound = r.add_device(**{f: getattr(kept, f) for f in ("name", "profile", "radio", "w_energy", "w_privacy", "min_split",
                                "model_id", "model_version", "split_device", "split_edge", "encoding", "edge_id")}, holder="CN=cam")
        assert r.revoke_device(bound.device_id) and r.holder_revoked("CN=cam")
    finally:
        r.close()
    assert run_sql(db, ["SELECT version FROM schema_version"]) == [(registry_schema.VERSION,)]
    indexes = ("SELECT indexname FROM pg_indexes WHERE tablename = 'devices'" if db.startswith("postgresql")
               else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'devices'")
    assert ("devices_holder",) in run_sql(db, [indexes])


def test_an_upgrade_of_an_older_file_killed_halfway_still_adds_what_step_1_adds(db: str) -> None:
    """An empty version table reads as version 0, not 1: the columns step 1 adds are added."""
    old_database(db)
    run_sql(db, ["ALTER TABLE edges DROP COLUMN activation_cost", "CREATE TABLE schema_version (version INTEGER NOT NULL)"])
    r = Registry(db)
    try:
        assert r.edge("e1").activation_cost == 0.0
    finally:
        r.close()


def test_migrate_returns_the_version_it_found_0_for_a_new_or_unversioned_database(tmp_path: Path) -> None:
    new, old = str(tmp_path / "new.sqlite3"), str(tmp_path / "old.sqlite3")
    old_database(old)
    for path, found in ((new, 0), (old, 0), (new, registry_schema.VERSION), (old, registry_schema.VERSION)):
        engine = sqlite_engine(path)
        try:
            with engine.begin() as conn:
                assert registry_schema.migrate(conn) == found, path
        finally:
            engine.dispose()
