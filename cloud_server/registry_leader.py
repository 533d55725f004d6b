"""The scheduler lease and the placements it fences, on a registry shared by cloud replicas.

Leader election (Kubernetes' lease, in one row): the holder renews the lease before it expires; any
replica may take an expired lease, and each change of holder increments ``term``. Every statement is
a conditional ``UPDATE`` on that row, so two replicas racing for it on PostgreSQL (row locks,
re-checked conditions) or SQLite (one writer at a time) cannot both win.

Fencing: a placement is written only in the same transaction as a check that the writer still holds
the lease at its term, and gets the next version from the table itself. A deposed leader's late
write is refused (:class:`LeaseLostError`) instead of overwriting its successor's, and versions
stay unique and increasing across replicas (no in-memory counter).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from cloud_server import registry_schema as schema
from ecd.errors import PreconditionError

L = schema.scheduler_lease


@dataclass(frozen=True)
class Fence:
    """What a leader's write presents: the lease, its holder, the term it was won at."""

    name: str
    holder: str
    term: int


class LeaseLostError(PreconditionError):
    """The writer no longer holds the lease it presents: another replica leads now."""


def hold(conn: Connection, name: str, holder: str, ttl_s: float, now: float) -> int | None:
    """Renew ``name`` for ``holder``, take it if it expired, or create it; the term held, or None
    when another replica holds it."""
    until = now + ttl_s
    if conn.execute(L.update().where(L.c.name == name, L.c.holder == holder, L.c.expires_unix >= now)
                    .values(expires_unix=until)).rowcount == 1:
        return int(conn.execute(select(L.c.term).where(L.c.name == name)).scalar_one())
    if conn.execute(L.update().where(L.c.name == name, L.c.expires_unix < now)
                    .values(holder=holder, term=L.c.term + 1, expires_unix=until)).rowcount == 1:
        return int(conn.execute(select(L.c.term).where(L.c.name == name)).scalar_one())
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    first = (insert(L).values(name=name, holder=holder, term=1, expires_unix=until)
             .on_conflict_do_nothing(index_elements=["name"]).returning(L.c.term))
    return 1 if conn.execute(first).first() is not None else None  # the first lease ever, unless another replica made it first


def release(conn: Connection, name: str, holder: str) -> bool:
    """``holder`` gives ``name`` up (a replica stopping): another replica may take it at once."""
    return conn.execute(L.update().where(L.c.name == name, L.c.holder == holder).values(expires_unix=0.0)).rowcount == 1


def holder_of(conn: Connection, name: str, now: float) -> str:
    """Who holds ``name`` now ("" when nobody does)."""
    row = conn.execute(select(L.c.holder).where(L.c.name == name, L.c.expires_unix >= now)).first()
    return row[0] if row else ""


def add_placement(conn: Connection, report: dict, fence: Fence, now: float) -> int:
    """Store ``report`` as the next placement if ``fence`` still holds; its version."""
    held = conn.execute(L.update().where(L.c.name == fence.name, L.c.holder == fence.holder, L.c.term == fence.term,
                                         L.c.expires_unix >= now).values(expires_unix=L.c.expires_unix)).rowcount == 1
    if not held:
        raise LeaseLostError(f"scheduler: this replica ({fence.holder}) no longer leads (its term {fence.term} ended): "
                             "its placement is not written")
    p = schema.placements
    version = int(conn.execute(select(func.coalesce(func.max(p.c.version), 0))).scalar_one()) + 1
    conn.execute(p.insert().values(version=version, report=json.dumps({**report, "version": version}), computed_unix=now))
    return version
