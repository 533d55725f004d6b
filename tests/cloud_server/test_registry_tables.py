"""Every registry table on exact values, on SQLite and on PostgreSQL: devices and their revocation,
edges and their owners, locations, campaigns and their tasks, placements, heads (issue 19: the
mutation gate found most of these reached only through the cloud's gRPC tests, which would not
notice, say, a task's cell and slot swapped or the newest campaign listed last).

The registry's clock is replaced by one the test sets, so times, orders and boundaries are exact.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from collections.abc import Iterator
from types import SimpleNamespace

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import func, select

from cloud_server.registry_leader import Fence, LeaseLostError
from cloud_server.registry import REVOKED, Answer, DeviceRecord, EdgeRecord, Registry, _one_line, _postgres_params
from ecd.errors import ConfigError, UnavailableError

FIELDS = dict(
    name="phone", profile="pixel7", radio="lte", w_energy=0.25, w_privacy=0.75, min_split=2, model_id="faces_cnn",
    model_version="v3", split_device=3, split_edge=5, encoding="INT8",
)


@pytest.fixture
def clock() -> SimpleNamespace:
    """The registry's clock, set by the test (starts at 0.5 s: after 0, before 1)."""
    return SimpleNamespace(t=0.5)


@pytest.fixture
def registry(db: str, clock: SimpleNamespace) -> Iterator[Registry]:
    """The registry on the test's clock (every test here reads times exactly)."""
    r = Registry(db, clock=lambda: clock.t)
    yield r
    r.close()


def add(registry: Registry, edge_id: str = "e", **overrides) -> DeviceRecord:
    return registry.add_device(**{**FIELDS, **overrides}, edge_id=edge_id)


# --- devices ------------------------------------------------------------------------------------


def test_a_new_device_gets_a_12_hex_id_and_a_32_hex_token_or_the_one_given(registry: Registry) -> None:
    d = add(registry)
    assert len(d.device_id) == 12 and int(d.device_id, 16) >= 0
    assert len(d.token) == 32 and int(d.token, 16) >= 0
    given = registry.add_device(token="sha256:abc", **FIELDS, edge_id="e")
    assert registry.device(given.device_id).token == "sha256:abc"
    assert registry.device(d.device_id) == d and registry.device_count() == 2


def test_revoking_marks_the_token_and_the_time_and_is_listed_after_that_time(registry: Registry, clock: SimpleNamespace) -> None:
    a, b, c = add(registry), add(registry), add(registry)
    clock.t = 10.0
    assert registry.revoke_device(b.device_id) and registry.revoke_device(a.device_id)
    assert not registry.revoke_device("nope")
    assert registry.device(b.device_id).token == REVOKED and registry.device(c.device_id).token == c.token
    assert registry.revoked_since(9.5) == sorted([a.device_id, b.device_id])
    assert registry.revoked_since(10.0) == []  # strictly after
    assert registry.revoked_since(0.0) == sorted([a.device_id, b.device_id])  # never revoked (0) is not listed
    [(_, _, _, revoked)] = registry.device_activity(10, b.device_id)
    assert revoked == 10.0


def test_seen_since_bounds_the_live_devices_and_their_count_per_edge(registry: Registry, clock: SimpleNamespace) -> None:
    a = add(registry, "e1")
    quiet = add(registry, "e3")  # registered at 0.5 s, never heard from since
    clock.t = 2.0
    b = add(registry, "e2")
    c = add(registry, "e1")
    registry.touch_device(a.device_id, 7.0)
    registry.touch_device("nope", 9.0)
    assert [d.device_id for d in registry.devices()] == sorted([a.device_id, quiet.device_id]) + sorted(
        [b.device_id, c.device_id])  # by registration time, ties by id
    assert [d.device_id for d in registry.devices(7.0)] == [a.device_id]  # at the bound counts
    assert [d.device_id for d in registry.devices(2.0)] == [a.device_id] + sorted([b.device_id, c.device_id])
    assert registry.devices(7.5) == []
    assert registry.devices_per_edge() == {"e1": 2, "e2": 1, "e3": 1}
    assert registry.devices_per_edge(7.0) == {"e1": 1}
    assert registry.devices_per_edge(2.0) == {"e1": 2, "e2": 1}


def test_device_activity_is_bounded_and_ordered_by_registration(registry: Registry, clock: SimpleNamespace) -> None:
    clock.t = 3.0
    a = add(registry)
    clock.t = 1.0
    b = add(registry)
    registry.touch_device(b.device_id, 5.0)
    rows = registry.device_activity(10)
    assert [(r.device_id, reg, seen, rev) for r, reg, seen, rev in rows] == [
        (b.device_id, 1.0, 5.0, 0.0), (a.device_id, 3.0, 3.0, 0.0)]
    assert rows[1][0] == a and all(type(v) is float for row in rows for v in row[1:])
    assert [r.device_id for r, *_ in registry.device_activity(1)] == [b.device_id]
    assert registry.device_activity(0) == [] and registry.device_activity(-3) == []
    assert [r.device_id for r, *_ in registry.device_activity(10, a.device_id)] == [a.device_id]
    assert registry.device_activity(10, "nope") == []


def test_update_device_refuses_ids_tokens_and_unknown_fields_naming_them(registry: Registry) -> None:
    d = add(registry)
    assert registry.update_device(d.device_id, name="renamed", edge_id="e9").name == "renamed"
    assert registry.device(d.device_id).edge_id == "e9"
    with pytest.raises(ValueError) as e:
        registry.update_device(d.device_id, token="x", colour="red")
    assert str(e.value) == "update_device: not device fields: colour, token"
    assert registry.device(d.device_id).token == d.token


def test_placement_moves_devices_and_reputations_are_stored_exactly(registry: Registry) -> None:
    a, b, c = add(registry, "e1"), add(registry, "e1"), add(registry, "e1")
    registry.set_device_edges({a.device_id: "e2", c.device_id: "e3"})
    registry.set_device_edges({})
    assert [registry.device(x.device_id).edge_id for x in (a, b, c)] == ["e2", "e1", "e3"]
    registry.set_reputations({b.device_id: 3.25, c.device_id: 1})
    registry.set_reputations({})
    assert [registry.device(x.device_id).reputation for x in (a, b, c)] == [a.reputation, 3.25, 1.0]


def test_locations_are_kept_as_a_trace_and_the_last_as_the_current_position(registry: Registry) -> None:
    a, b = add(registry), add(registry)
    first, second = sorted([a.device_id, b.device_id])
    registry.record_location(second, 45.5, 9.25, 2_000)
    registry.record_location(first, 1.0, 2.0, 5_000)
    registry.record_location(second, 46.0, 9.5, 1_000)  # arrives late: the trace is ordered by time
    assert registry.locations() == {first: [(1.0, 2.0)], second: [(46.0, 9.5), (45.5, 9.25)]}
    assert list(registry.locations()) == [first, second]
    d = registry.device(second)
    assert (d.lat, d.lon) == (46.0, 9.5)  # the last one reported
    assert registry.device(first).lat == 1.0


# --- edges --------------------------------------------------------------------------------------


def test_an_edge_gets_a_12_hex_id_and_defaults_to_no_cost_and_no_owner(registry: Registry, clock: SimpleNamespace) -> None:
    clock.t = 4.0
    e = registry.add_edge("10.0.0.1:1", 2.5)
    assert e == EdgeRecord(e.edge_id, "10.0.0.1:1", 2.5, 0.0, 0, 4.0, None, None, 0.0, "")
    assert len(e.edge_id) == 12 and int(e.edge_id, 16) >= 0
    placed = registry.add_edge("10.0.0.2:1", 1.0, lat=45.0, lon=7.5, activation_cost=3.0, owner="edge-a")
    assert (placed.lat, placed.lon, placed.activation_cost, placed.owner) == (45.0, 7.5, 3.0, "edge-a")


def test_an_owned_endpoint_is_updated_only_by_its_owner(registry: Registry, clock: SimpleNamespace) -> None:
    e = registry.add_edge("h:1", 1.0, owner="edge-a")
    clock.t = 6.0
    assert registry.add_edge("h:1", 9.0, owner="edge-b") is None
    assert registry.add_edge("h:1", 9.0) is None  # plaintext cannot take it either
    assert registry.edge(e.edge_id) == e
    again = registry.add_edge("h:1", 4.0, lat=1.0, lon=2.0, activation_cost=0.5, owner="edge-a")
    assert again == EdgeRecord(e.edge_id, "h:1", 4.0, 0.0, 0, 6.0, 1.0, 2.0, 0.5, "edge-a")
    free = registry.add_edge("g:1", 1.0)
    claimed = registry.add_edge("g:1", 1.0, owner="edge-c")  # an unbound endpoint is claimed
    assert (claimed.edge_id, claimed.owner) == (free.edge_id, "edge-c")


def test_heartbeat_and_leaving(registry: Registry, clock: SimpleNamespace) -> None:
    e = registry.add_edge("h:1", 1.0)
    clock.t = 8.0
    assert registry.heartbeat(e.edge_id, 0.5, 3)
    assert registry.edge(e.edge_id) == EdgeRecord(e.edge_id, "h:1", 1.0, 0.5, 3, 8.0)
    assert registry.remove_edge(e.edge_id) and not registry.remove_edge("nope")
    assert registry.edge(e.edge_id).last_seen_unix == 0.0
    assert registry.add_edge("h:1", 1.0).edge_id == e.edge_id  # it keeps its id when it returns


# --- campaigns and tasks ------------------------------------------------------------------------


def test_campaigns_newest_first_bounded_and_replaced_in_place(registry: Registry, clock: SimpleNamespace) -> None:
    for t, cid in ((1.0, "b"), (2.0, "c"), (2.0, "a"), (3.0, "d")):
        clock.t = t
        registry.put_campaign(cid, {"id": cid, "t": t})
    clock.t = 9.0
    registry.put_campaign("b", {"id": "b", "v": 2})  # a new report, the same creation time
    assert registry.campaign("b") == {"id": "b", "v": 2} and registry.campaign("zz") is None
    assert [c["id"] for c in registry.campaigns(10)] == ["d", "a", "c", "b"]
    assert [c["id"] for c in registry.campaigns(2)] == ["d", "a"]
    assert registry.campaigns(0) == [] and registry.campaigns(-1) == []
    assert registry.campaign_count() == 4


def test_tasks_are_listed_answered_once_and_only_by_their_device(registry: Registry) -> None:
    registry.add_tasks("c2", [(0, "dev", 7, 1)])
    registry.add_tasks("c1", [(5, "dev", 3, 2), (6, "dev", 4, 0), (7, "other", 8, 0), (8, "dev", 9, 2)])
    registry.add_tasks("c1", [])
    assert registry.pending_tasks("dev") == [("c1", 6, 4, 0), ("c1", 5, 3, 2), ("c1", 8, 9, 2), ("c2", 0, 7, 1)]
    assert all(type(v) is int for row in registry.pending_tasks("dev") for v in row[1:])
    assert registry.unanswered("c1") == 4
    assert registry.answer_task("c1", 5, "dev", 21.5, "hot") == "new"
    assert registry.answer_task("c1", 6, "dev", 0.0, "") == "new"  # a zero reading is an answer too
    assert registry.answer_task("c1", 5, "dev", 99.0, "cold") == "again"  # the first answer stays
    assert registry.answer_task("c1", 7, "dev", 1.0, "x") == "not yours"  # another device's task
    assert registry.answer_task("c1", 99, "dev", 1.0, "x") == "not yours"
    assert registry.answer_task("c2", 5, "dev", 1.0, "x") == "not yours"
    assert registry.pending_tasks("dev") == [("c1", 8, 9, 2), ("c2", 0, 7, 1)]
    assert registry.unanswered("c1") == 2 and registry.unanswered("c2") == 1 and registry.unanswered("zz") == 0
    assert registry.tasks("c1") == [
        (5, "dev", 3, 2, True, 21.5, "hot"), (6, "dev", 4, 0, True, 0.0, ""),
        (7, "other", 8, 0, False, None, None), (8, "dev", 9, 2, False, None, None),
    ]
    assert [type(v) for v in registry.tasks("c1")[0]] == [int, str, int, int, bool, float, str]
    assert registry.tasks("zz") == []


def test_rows_are_typed_records_that_still_unpack_like_the_tuples_they_replace(registry: Registry) -> None:
    d = add(registry)
    registry.add_tasks("c", [(1, d.device_id, 4, 6)])
    [pending] = registry.pending_tasks(d.device_id)
    assert (pending.campaign_id, pending.task_id, pending.cell, pending.slot) == ("c", 1, 4, 6)
    assert registry.answer_task("c", 1, d.device_id, 2.5, "x") is Answer.NEW
    [task] = registry.tasks("c")
    assert (task.answered, task.reading, task.label) == (True, 2.5, "x")
    [activity] = registry.device_activity(1)
    assert activity.record == d and activity.revoked_unix == 0.0
    registry.record_location(d.device_id, 1.5, 2.5, 7)
    [point] = registry.locations()[d.device_id]
    assert (point.lat, point.lon) == (1.5, 2.5)


def test_a_batch_that_fails_writes_nothing(registry: Registry) -> None:
    registry.add_tasks("c", [(1, "dev", 0, 0)])
    with pytest.raises(sqlalchemy.exc.IntegrityError) as e:
        registry.add_tasks("c", [(2, "dev", 0, 0), (1, "dev-secret", 0, 0)])  # task 1 is there already
    assert "dev-secret" not in str(e.value)  # no value of a failed write reaches a log (a token could be one)
    assert [t[0] for t in registry.tasks("c")] == [1]
    registry.add_tasks("c", [(2, "dev", 5, 6)])  # and the registry goes on working
    assert registry.tasks("c")[1] == (2, "dev", 5, 6, False, None, None)


# --- placements and heads -----------------------------------------------------------------------


def test_placements_are_numbered_by_the_registry_under_the_lease_that_fences_them(registry: Registry, clock: SimpleNamespace) -> None:
    assert registry.latest_placement() is None
    assert registry.hold_lease("scheduler", "a", 5.0) == 1
    lead = Fence("scheduler", "a", 1)
    assert [registry.add_placement({"version": 0, "edges": [k]}, lead) for k in "xyz"] == [1, 2, 3]
    assert registry.latest_placement() == {"version": 3, "edges": ["z"]}
    for _ in range(7):
        registry.add_placement({"edges": []}, lead)
    assert registry.latest_placement()["version"] == 10  # a number, not text: 10 > 9
    clock.t += 5.0 + 0.001  # a's lease ran out; b takes it
    assert registry.hold_lease("scheduler", "b", 5.0) == 2 and registry.lease_holder("scheduler") == "b"
    with pytest.raises(LeaseLostError, match=r"^scheduler: this replica \(a\) no longer leads \(its term 1 ended\)"):
        registry.add_placement({"edges": ["late"]}, lead)  # a deposed leader's late write
    assert registry.latest_placement()["version"] == 10
    assert registry.add_placement({"edges": ["b"]}, Fence("scheduler", "b", 2)) == 11
    with pytest.raises(LeaseLostError):  # a holder's name alone is no fence: the term counts too
        registry.add_placement({"edges": []}, Fence("scheduler", "b", 1))


def test_the_scheduler_lease_has_one_holder_until_it_expires_or_is_released(registry: Registry, clock: SimpleNamespace) -> None:
    assert registry.lease_holder("scheduler") == ""
    assert registry.hold_lease("scheduler", "a", 5.0) == 1
    assert registry.hold_lease("scheduler", "b", 5.0) is None
    clock.t += 5.0  # at the expiry instant a still holds it and renews
    assert registry.hold_lease("scheduler", "a", 5.0) == 1 and registry.hold_lease("scheduler", "b", 5.0) is None
    assert not registry.release_lease("scheduler", "b") and registry.lease_holder("scheduler") == "a"
    assert registry.release_lease("scheduler", "a") and registry.lease_holder("scheduler") == ""
    assert registry.hold_lease("scheduler", "b", 5.0) == 2  # at once, and in a new term
    assert registry.hold_lease("scheduler", "a", 5.0) is None
    clock.t += 5.001
    assert registry.hold_lease("scheduler", "a", 5.0) == 3


def test_heads_added_at_one_time_are_ordered_by_name(registry: Registry, clock: SimpleNamespace) -> None:
    registry.put_head("m", "zeta", {"name": "zeta"})
    registry.put_head("m", "alpha", {"name": "alpha"})
    clock.t = 0.25
    registry.put_head("m", "omega", {"name": "omega"})
    assert [h["name"] for h in registry.heads("m")] == ["omega", "alpha", "zeta"]


# --- opening, errors and the PostgreSQL connection ----------------------------------------------


def test_a_closed_registry_refuses_calls_and_never_reopens_its_file(tmp_path: Path) -> None:
    """A handler still running after the server stopped gets UNAVAILABLE naming db; the SQLite file
    its owner is removing is not created again (it was, by the engine reconnecting)."""
    path = tmp_path / "r.sqlite3"
    r = Registry(path)
    r.close()
    path.unlink()
    with pytest.raises(UnavailableError, match=r"^db: .*r\.sqlite3: the registry is closed"):
        r.device("d")
    assert not path.exists()


def test_an_older_sqlite_file_gains_the_columns_added_since(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE edges (edge_id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, capacity REAL NOT NULL, "
                "load REAL NOT NULL DEFAULT 0, queue_depth INTEGER NOT NULL DEFAULT 0, last_seen_unix REAL NOT NULL)")
    old.execute("INSERT INTO edges VALUES ('e1', 'h:1', 2.0, 0, 0, 5.0)")
    old.commit()
    old.close()
    r = Registry(path)
    try:
        assert r.path == str(path)
        assert r.edge("e1") == EdgeRecord("e1", "h:1", 2.0, 0.0, 0, 5.0, None, None, 0.0, "")
        assert r.add_edge("h:2", 1.0, owner="o").owner == "o"
    finally:
        r.close()


def test_a_url_scheme_in_capitals_is_still_a_url_not_a_file_name() -> None:
    with pytest.raises(ConfigError, match=r"^db: expected a SQLite file or a postgresql:// URL, got 'MYSQL://h/x'$"):
        Registry("MYSQL://h/x")


def test_one_line_errors_name_the_type_when_empty_and_hide_the_secret() -> None:
    assert _one_line(ValueError("a\n  b\tc"), None) == "a b c"
    assert _one_line(ValueError(""), None) == "ValueError"
    assert _one_line(ValueError("user s3 pw s3"), "s3") == "user *** pw ***"
    assert _one_line(ValueError("x s3"), "") == "x s3"


def test_postgres_params_set_a_connect_timeout_unless_given_and_refuse_bad_urls() -> None:
    assert _postgres_params("postgresql://u@h:5/db")["connect_timeout"] == 10
    assert _postgres_params("postgresql://u@h:5/db?connect_timeout=3")["connect_timeout"] == "3"
    with pytest.raises(ConfigError) as e:
        _postgres_params("postgresql://u:pw@h:5/db?nonsense=1")
    message = str(e.value)
    assert message.startswith("db: not a valid postgresql URL postgresql://u:***@h:5/db?nonsense=1: ")
    assert "nonsense" in message.split(": ", 2)[2] and "\n" not in message


def test_a_postgresql_registry_hides_its_password_in_every_reason(postgres_url: str) -> None:
    r = Registry(postgres_url + "?password=hunter2")  # the test server trusts every login
    try:
        assert r.path.endswith("?password=***")
        assert r._reason(RuntimeError("auth hunter2 failed")) == "auth *** failed"
    finally:
        r.close()


def test_sqlite_reasons_are_the_error_on_one_line(tmp_path: Path) -> None:
    r = Registry(tmp_path / "r.sqlite3")
    try:
        assert r._reason(RuntimeError("disk\nfull")) == "disk full"
    finally:
        r.close()


def test_a_broken_postgresql_connection_is_reported_then_reopened(postgres_url: str) -> None:
    """The server dropped the registry's connection (a restart, a failover): the next statement is a
    clear UnavailableError naming db, and the one after reconnects, committing as before."""
    r, other = Registry(postgres_url), Registry(postgres_url)
    try:
        def drop() -> None:
            [(pid,)] = r._rows(select(func.pg_backend_pid()))
            other._rows(select(func.pg_terminate_backend(pid, 5000)))  # returns once it is gone

        drop()
        with pytest.raises(UnavailableError, match=r"^db: postgresql://\S+: .*terminat"):  # the server's reason
            r.add_edge("h:1", 1.0)
        e = r.add_edge("h:1", 1.0)
        assert other.edge(e.edge_id) == e  # committed: seen by another connection
        drop()
        with pytest.raises(UnavailableError, match=r"^db: postgresql://\S+: .*terminat"):
            r.add_tasks("c", [(1, "dev", 2, 3)])
        r.add_tasks("c", [(1, "dev", 2, 3), (2, "dev", 4, 5)])
        assert other.tasks("c") == [(1, "dev", 2, 3, False, None, None), (2, "dev", 4, 5, False, None, None)]
        e2 = r.add_edge("h:2", 1.0)  # single statements on the reopened connection commit too
        assert other.edge(e2.edge_id) == e2
    finally:
        r.close()
        other.close()


def test_a_role_that_may_not_create_tables_is_a_config_error_naming_db(postgres_server, postgres_url: str) -> None:
    """The operator gave a role without CREATE on the database's schema (PostgreSQL 15+'s default for
    every role but the owner): one line naming db and saying why, not a traceback."""
    role = f"reader_{postgres_url.rsplit('_', 1)[1]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        with pytest.raises(ConfigError) as e:
            Registry(postgres_url.replace("//postgres@", f"//{role}@"))
        assert str(e.value).startswith(f"db: cannot create the registry's tables in postgresql://{role}@")
        assert "permission denied" in str(e.value) and "\n" not in str(e.value)
    finally:
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")
