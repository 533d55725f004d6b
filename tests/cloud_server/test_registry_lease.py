"""The scheduler lease in the registry (cloud_server/registry_leader.py) where
test_registry_tables.py's one lease does not look, on SQLite and on PostgreSQL: leases by name are
independent, the expiry instant belongs to the holder for every reader, a lease that lapsed is a new
tenure even for its last holder, and a holder past its expiry writes nothing though nobody took over.

Each test sets the registry's clock itself (times and boundaries exact)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from cloud_server.registry import Registry
from cloud_server.registry_leader import Fence, LeaseLostError


@pytest.fixture
def timed(db: str) -> Iterator[SimpleNamespace]:
    """A registry and the clock it reads (``.t``, unix seconds)."""
    at = SimpleNamespace(t=100.0)
    at.registry = Registry(db, clock=lambda: at.t)
    yield at
    at.registry.close()


def test_leases_by_name_are_independent(timed: SimpleNamespace) -> None:
    r = timed.registry
    assert r.hold_lease("scheduler", "a", 5.0) == 1 and r.hold_lease("campaigns", "b", 5.0) == 1
    assert r.hold_lease("sites", "a", 60.0) == 1
    assert r.hold_lease("campaigns", "a", 5.0) is None  # a holds two leases, not every lease
    assert (r.lease_holder("scheduler"), r.lease_holder("campaigns"), r.lease_holder("other")) == ("a", "b", "")
    with pytest.raises(LeaseLostError):  # a fence names its lease: a's term 1 of "scheduler" is not one of "campaigns"
        r.add_placement({"edges": []}, Fence("campaigns", "a", 1))
    timed.t += 3.0
    assert r.hold_lease("scheduler", "a", 5.0) == 1  # renews "scheduler" to 108 only
    timed.t += 2.5
    assert (r.lease_holder("scheduler"), r.lease_holder("campaigns")) == ("a", "")
    assert r.add_placement({"edges": []}, Fence("scheduler", "a", 1)) == 1
    assert r.hold_lease("campaigns", "c", 5.0) == 2
    assert not r.release_lease("campaigns", "a")  # a releases only what it holds...
    assert r.release_lease("scheduler", "a") and r.lease_holder("scheduler") == ""
    assert (r.lease_holder("sites"), r.lease_holder("campaigns")) == ("a", "c")  # ...by name


def test_the_expiry_instant_is_still_the_holders_for_every_reader(timed: SimpleNamespace) -> None:
    r = timed.registry
    assert r.hold_lease("scheduler", "a", 5.0) == 1
    timed.t = 105.0
    assert r.lease_holder("scheduler") == "a" and r.hold_lease("scheduler", "b", 5.0) is None
    assert r.add_placement({"edges": []}, Fence("scheduler", "a", 1)) == 1
    timed.t = 105.001
    assert r.lease_holder("scheduler") == ""


def test_a_lease_that_lapsed_is_a_new_term_even_for_its_last_holder(timed: SimpleNamespace) -> None:
    """A replica that missed its renewal (paused, cut off) may have been deposed meanwhile as far as
    it knows: what it computed under the old term is refused, and it solves again."""
    r = timed.registry
    assert r.hold_lease("scheduler", "a", 5.0) == 1 and r.hold_lease("sites", "b", 5.0) == 1
    timed.t += 5.001
    assert r.hold_lease("scheduler", "a", 5.0) == 2
    assert r.lease_holder("sites") == "" and r.hold_lease("sites", "c", 5.0) == 2  # taking one lapsed lease takes no other
    with pytest.raises(LeaseLostError):
        r.add_placement({"edges": []}, Fence("scheduler", "a", 1))
    assert r.add_placement({"edges": []}, Fence("scheduler", "a", 2)) == 1


def test_a_holder_past_its_expiry_writes_nothing_though_nobody_took_over(timed: SimpleNamespace) -> None:
    r = timed.registry
    assert r.hold_lease("scheduler", "a", 5.0) == 1
    timed.t += 5.001
    with pytest.raises(LeaseLostError, match=r"^scheduler: this replica \(a\) no longer leads \(its term 1 ended\): "
                                             r"its placement is not written$"):
        r.add_placement({"edges": ["late"]}, Fence("scheduler", "a", 1))
    assert r.latest_placement() is None
