"""Ours: TAPP's exact MILP (scheduling/allocation/tapp_exact.py) on values, issue 19's mutation gate: the
rows it takes, the joint shortages it finds, what it refuses, and how it asks HiGHS for a proof within its time.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from solver_spy import record_milp, unproven_milp

from scheduling.allocation import tapp, tapp_exact
from scheduling.allocation.tapp_model import TappError, TappInfeasible, TappInstance


def test_exact_takes_a_row_shaped_like_the_community_at_theta_zero() -> None:
    """A row in the community's own proportions discloses nothing (KL = 0): safe even at θ = 0."""
    inst = TappInstance(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([2, 2]), np.array([1, 1]), 0.0)
    got = tapp.allocate(inst, "exact")
    assert got.x.tolist() == [[1, 1], [0, 0]] and (got.dangerous, got.allocated) == (0, 1)


def test_exact_finds_a_joint_shortage_the_capacity_check_misses() -> None:
    # every subregion, and the whole, has enough time; but A is needed in 0 and B in 2, so 1 has nobody
    profiles = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    inst = TappInstance(profiles, np.array([1, 1, 1]), np.array([1, 1, 1, 0]), 0.5)
    with pytest.raises(TappInfeasible, match=r"^time_threshold: no allocation meets every workload within the participants' time thresholds$"):
        tapp.allocate(inst, "exact")


def test_exact_refuses_a_group_with_too_many_rows_to_enumerate() -> None:
    inst = TappInstance(np.full((1, 6), 1 / 6), np.array([30]), np.full(6, 5), 0.5)
    with pytest.raises(TappError, match=r"^method=exact: participants active in 6 subregions with time threshold 30 "
                                        r"have more than 200000 possible rows to enumerate$"):
        tapp.allocate(inst, "exact")


def test_exact_out_of_time_after_the_first_stage_proves_only_the_fewest_dangerous(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    best = tapp.allocate(inst, "exact")
    assert best.proven == ("dangerous", "allocated")
    clock = itertools.chain([0.0], itertools.repeat(1e9))  # the deadline is set, then stage 1 has taken all the time
    hurried = tapp.exact(inst, clock=lambda: next(clock))
    assert hurried.proven == ("dangerous",) and hurried.to_dict()["proven_optimal"] == ["dangerous"]
    assert hurried.dangerous == best.dangerous


def test_allocations_as_dicts() -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([2, 2]), np.array([1, 1]), 0.0)
    got = tapp.allocate(inst, "exact")
    assert got.to_dict() == {
        "method": "exact", "allocation": [[1, 1], [0, 0]], "disclosure": got.disclosure.tolist(), "dangerous": 0,
        "allocated": 1, "utility": got.utility, "proven_optimal": ["dangerous", "allocated"],
    }
    b = tapp.allocate(inst, "baseline2")
    assert b.to_dict() == {"method": "baseline2", "allocation": b.x.tolist(), "disclosure": b.disclosure.tolist(),
                           "dangerous": b.dangerous, "allocated": b.allocated, "utility": b.utility}


def test_exact_without_time_to_prove_anything_says_so() -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    with pytest.raises(TappError, match=r"^method=exact: no proof of the fewest dangerous participants within 0 s \(.*Time limit"):
        tapp.exact(inst, time_limit_s=0.0)


def test_exact_asks_highs_for_a_proven_integer_optimum_within_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes it exact: integer columns, a zero MIP gap, and the caller's time limit on each
    stage. The solver's own result still decides; the calls are only recorded."""
    calls = record_milp(monkeypatch, tapp_exact)
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    tapp.exact(inst)
    assert len(calls) == 2 and calls[0]["options"] == {"time_limit": tapp_exact.EXACT_TIME_LIMIT_S, "mip_rel_gap": 0.0}
    assert calls[1]["options"]["mip_rel_gap"] == 0.0 and 0 < calls[1]["options"]["time_limit"] <= tapp_exact.EXACT_TIME_LIMIT_S
    assert all(np.array_equal(c["integrality"], np.ones(len(c["integrality"]))) for c in calls)
    calls.clear()
    tapp.exact(inst, time_limit_s=7.5)
    assert calls[0]["options"]["time_limit"] == 7.5


def test_exact_refuses_a_first_stage_answer_highs_did_not_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    """HiGHS out of time with an incumbent (status 1, x set; doctored) is no proof of the fewest dangerous."""
    unproven_milp(monkeypatch, tapp_exact, "Time limit reached. (HiGHS Status 13: message: Time limit reached)")
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    with pytest.raises(TappError, match=r"^method=exact: no proof of the fewest dangerous participants within 60 s \(Time limit"):
        tapp.exact(inst)


def test_exact_uses_what_is_left_of_its_time_for_the_second_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a second left after stage 1: stage 2 runs, with that half second as its limit (recorded;
    whether HiGHS proves it in that time is not asked, so a loaded machine cannot fail this)."""
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    clock = itertools.chain([0.0], itertools.repeat(59.5))  # the deadline is set at 0; stage 1 ends at 59.5 s
    calls = record_milp(monkeypatch, tapp_exact)
    tapp.exact(inst, clock=lambda: next(clock))
    assert [c["options"]["time_limit"] for c in calls] == [tapp_exact.EXACT_TIME_LIMIT_S, 0.5]
