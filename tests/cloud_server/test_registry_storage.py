"""The registry's write path on a full disk, without a disk to fill: which errors mean "no space",
the state's hysteresis on an exact clock, and a real SQLite registry refusing writes by name when its
file may not grow (``PRAGMA max_page_count``) and taking them again after a probe. The whole cloud
on a real full tmpfs is tests/cloud_server/test_disk_full.py (root only, and too slow for the
mutation gate's registry group, which these pin)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy.exc

from cloud_server import registry_storage
from cloud_server.registry import Registry
from cloud_server.registry_storage import RegistryFullError, Storage, StorageState, is_disk_full
from ecd.errors import UnavailableError


class PgError(Exception):
    """What psycopg raises: the SQLSTATE on the exception."""

    def __init__(self, text: str, sqlstate: str) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate


def wrapped(orig: BaseException) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT INTO devices", {}, orig)


def test_disk_full_is_told_by_sqlstate_or_by_the_words_sqlite_and_the_os_use() -> None:
    full = [sqlite3.OperationalError("database or disk is full"), sqlite3.OperationalError("Database Or Disk Is Full"),
            OSError(28, "No space left on device"), PgError("could not extend file", "53100")]
    for error in full:
        assert is_disk_full(error) and is_disk_full(wrapped(error)), error
    not_full = [sqlite3.OperationalError("database is locked"), PgError("out of memory", "53200"),
                PgError("could not extend file: disk full", "53000"), OSError(13, "Permission denied")]
    for error in not_full:
        assert not is_disk_full(error) and not is_disk_full(wrapped(error)), error
    # the driver's error is what is read: the statement SQLAlchemy adds to its text does not count
    assert not is_disk_full(sqlalchemy.exc.OperationalError("no space left on device", {}, PgError("fine", "00000")))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The storage's monotonic clock, set by the test."""
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(registry_storage, "time", SimpleNamespace(monotonic=lambda: now.t))
    return now


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ecd.cloud"]


def test_full_from_the_first_refusal_until_a_probe_after_settle_s_without_one(
        clock: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ecd.cloud")
    storage = Storage("/srv/cloud.sqlite3", settle_s=3.0)
    assert storage.state is StorageState.WRITABLE
    storage.probed()  # a probe while writable changes nothing, says nothing
    assert storage.state is StorageState.WRITABLE and said(caplog) == []
    error = storage.full("database or disk is full")
    assert isinstance(error, RegistryFullError) and isinstance(error, UnavailableError)
    assert str(error) == "db: registry disk full (/srv/cloud.sqlite3): database or disk is full"
    assert storage.state is StorageState.FULL
    clock.t += 2.0
    storage.full("again")  # a later refusal restarts the wait, and is not logged again
    clock.t += 2.75
    storage.probed()
    assert storage.state is StorageState.FULL  # 2.75 s since the last refusal: not yet
    clock.t += 0.25
    storage.probed()
    assert storage.state is StorageState.WRITABLE  # exactly settle_s since it
    storage.probed()
    lines = said(caplog)
    assert len(lines) == 2, lines
    assert "/srv/cloud.sqlite3: disk full (database or disk is full): writes are refused" in lines[0]
    assert lines[1] == "[CloudServer.Registry] /srv/cloud.sqlite3: writes go through again"


def test_the_state_changes_once_each_way_over_many_refusals(clock: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ecd.cloud")
    storage = Storage("db", settle_s=1.0)
    for _ in range(3):
        storage.full("x")
        assert storage.state is StorageState.FULL
    clock.t += 1.0
    for _ in range(3):
        storage.probed()
    storage.full("y")
    assert storage.state is StorageState.FULL
    assert [("disk full" in m, "go through again" in m) for m in said(caplog)] == [(True, False), (False, True), (True, False)]


def no_room_left(registry: Registry) -> None:
    """The registry's SQLite file may not grow past its size now (SQLite's own limit); it is full
    once a write needs a page more."""
    with registry._transaction() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(RegistryFullError, match=r"^db: registry disk full \(.*registry\.sqlite3\): database or disk is full$"):
        for i in range(200):  # fills the free pages there are, then is refused
            registry.put_campaign(f"c{i}", {"pad": "x" * 2000})
    assert registry.storage.state is StorageState.FULL


def test_a_registry_whose_file_may_not_grow_refuses_writes_by_name_keeps_reads_and_takes_them_back(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite3")
    try:
        edge = registry.add_edge("10.0.0.1:50052", 4.0)
        no_room_left(registry)
        assert registry.edge(edge.edge_id) == edge  # reads go on
        registry.storage.settle_s = 0.0
        registry.probe_write()  # a write that needs no new page goes through: probes see space only when it is there
        assert registry.storage.state is StorageState.WRITABLE
        registry.storage.full("again")
        registry.probe_write()
        assert registry.storage.state is StorageState.WRITABLE
    finally:
        registry.close()


def test_a_probe_that_finds_no_room_leaves_the_registry_full_and_raises_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite3")
    try:
        with registry._transaction() as conn:  # the probe's write needs room too: a trigger makes it grow the file
            conn.exec_driver_sql("CREATE TABLE pad (b BLOB)")
            conn.exec_driver_sql("CREATE TRIGGER grow AFTER UPDATE ON schema_version BEGIN "
                                 "INSERT INTO pad VALUES (zeroblob(100000)); END")
        no_room_left(registry)
        registry.storage.settle_s = 0.0
        registry.probe_write()  # the monitor's probe: refused for space, and that is no error
        assert registry.storage.state is StorageState.FULL
        with registry._transaction() as conn:
            conn.exec_driver_sql("DROP TRIGGER grow")
        registry.probe_write()
        assert registry.storage.state is StorageState.WRITABLE
    finally:
        registry.close()


def test_a_full_disk_names_the_database_as_the_registry_shows_it(postgres_url: str, tmp_path: Path) -> None:
    """The refusal (a status a client sees, a log line) names the database: a PostgreSQL URL with
    its password masked, a SQLite file by its own name, even one that looks like a URL's query."""
    for db in (postgres_url + "?password=hunter2", str(tmp_path / "odd?password=kept.sqlite3")):
        registry = Registry(db)
        try:
            refused = str(registry.storage.full("no room"))
            assert refused == f"db: registry disk full ({registry.path}): no room", refused
            assert ("hunter2" in refused, "kept" in refused) == (False, db.endswith(".sqlite3"))
        finally:
            registry.close()


def test_a_registry_is_writable_again_3_s_after_its_last_refusal(clock: SimpleNamespace, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite3")
    try:
        registry.storage.full("no room")
        clock.t += 2.75
        registry.probe_write()
        assert registry.storage.state is StorageState.FULL
        clock.t += 0.25  # exactly 3 s (binary fractions: no rounding)
        registry.probe_write()
        assert registry.storage.state is StorageState.WRITABLE
    finally:
        registry.close()
