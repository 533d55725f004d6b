"""Spies on the HiGHS calls (``scipy.optimize.milp``) an exact scheduler makes: what it asks for is
recorded, and HiGHS still answers; or its answer is doctored, where a test needs one that a real run
on a small instance cannot give (out of time, with an incumbent)."""

from __future__ import annotations

from types import ModuleType

import pytest


def record_milp(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[dict]:
    """The keyword arguments of every ``milp`` call ``module`` makes from now on."""
    calls: list[dict] = []
    real = module.milp

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "milp", recording)
    return calls


def unproven_milp(monkeypatch: pytest.MonkeyPatch, module: ModuleType, message: str) -> None:
    """HiGHS's own answer, marked "out of time" (status 1) with its solution kept: no proof."""
    real = module.milp

    def unproven(*args, **kwargs):
        res = real(*args, **kwargs)
        res.status, res.message = 1, message
        return res

    monkeypatch.setattr(module, "milp", unproven)
