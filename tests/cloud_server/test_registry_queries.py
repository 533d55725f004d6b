"""The registry's queries on what a small table hides, on SQLite and on PostgreSQL: a certificate's
revocation asked by the certificate (it was pinned only over real mutual TLS, outside the mutation
gate's registry group), and an order the query states, not the one an index happens to read in.

test_registry_tables.py holds each table's exact values; these are the cases its mutation run left
unpinned (the gate's registry group, issue 28)."""

from __future__ import annotations

import threading
import uuid

from cloud_server.registry import Registry

FIELDS = dict(name="cam", profile="pi4", radio="wifi", w_energy=0.5, w_privacy=0.5, min_split=1, model_id="m",
              model_version="v1", split_device=1, split_edge=4, encoding="FLOAT32", edge_id="e")


def test_a_certificate_stays_out_once_a_device_registered_with_it_was_revoked(registry: Registry) -> None:
    kept = registry.add_device(**FIELDS, holder="CN=kept")
    gone = registry.add_device(**FIELDS, holder="CN=gone")
    registry.add_device(**FIELDS, holder="CN=gone")  # the same certificate registered twice: one revocation counts
    plaintext = registry.add_device(**FIELDS)  # no holder
    assert not registry.holder_revoked("CN=gone") and not registry.holder_revoked("CN=kept")
    assert registry.revoke_device(gone.device_id)
    assert registry.holder_revoked("CN=gone")
    assert not registry.holder_revoked("CN=kept") and not registry.holder_revoked("CN=nobody")
    assert registry.device(kept.device_id).holder == "CN=kept"
    assert registry.revoke_device(plaintext.device_id)  # a plaintext device revoked binds no certificate...
    assert not registry.holder_revoked("CN=kept")  # ...to any other


def test_a_trace_is_in_time_order_however_the_database_reads_it(registry: Registry) -> None:
    """Without the (device, time) index the database reads the rows as stored: only the query's
    own order puts a position that arrived late before the ones it preceded."""
    with registry._transaction() as conn:
        conn.exec_driver_sql("DROP INDEX locations_device")
    for unix_ms, lat in ((3_000, 3.0), (1_000, 1.0), (2_000, 2.0)):
        registry.record_location("d", lat, 0.5, unix_ms)
    registry.record_location("c", 9.0, 0.5, 5_000)
    assert registry.locations() == {"c": [(9.0, 0.5)], "d": [(1.0, 0.5), (2.0, 0.5), (3.0, 0.5)]}


def test_the_operator_view_lists_devices_by_registration_not_by_their_random_ids(db: str, monkeypatch) -> None:
    now = [1.0]
    registry = Registry(db, clock=lambda: now[0])
    # the ids chosen, so the first device registered has the largest (random ids left it to chance:
    # with 64 later devices, 1 run in 65 had none smaller than the first)
    planned, real = [uuid.UUID("f" * 32), uuid.UUID("a" * 32), uuid.UUID("0" * 32)], uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: planned.pop(0) if planned else real())
    try:
        first = registry.add_device(**FIELDS)
        now[0] = 2.0
        later = [registry.add_device(**FIELDS) for _ in range(2)]
        smallest = min(d.device_id for d in later)
        assert smallest < first.device_id == "f" * 12  # a device registered later has a smaller id
        assert [r.record.device_id for r in registry.device_activity(2)] == [first.device_id, smallest]  # ties by id
    finally:
        registry.close()


def test_a_devices_pending_tasks_of_one_slot_come_in_task_order_whatever_order_they_were_stored_in(registry: Registry) -> None:
    registry.add_tasks("c", [(9, "d", 4, 1), (3, "d", 2, 1), (7, "d", 6, 1), (5, "d", 8, 0), (1, "other", 0, 1)])
    assert registry.pending_tasks("d") == [("c", 5, 8, 0), ("c", 3, 2, 1), ("c", 7, 6, 1), ("c", 9, 4, 1)]


def test_an_in_memory_registry_is_one_database_for_every_thread() -> None:
    """The servicer's handlers run on a pool's threads: ``:memory:`` must be one database for all."""
    registry = Registry(":memory:")
    try:
        edge = registry.add_edge("h:1", 1.0)
        seen: list = []
        reader = threading.Thread(target=lambda: seen.append(registry.edge(edge.edge_id)))
        reader.start()
        reader.join(30)
        assert seen == [edge]
    finally:
        registry.close()
