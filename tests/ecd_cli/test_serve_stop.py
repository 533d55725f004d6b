"""A service's stop that outlasts its grace period says in the log what it waits on, once, and is
still awaited to its end (``ecd_cli.stalls.stop_saying_what_stalls``): an operator whose SIGTERM
seems to hang reads where it hangs, through the edge's metered awaitables too, and where this
project's own coroutines are suspended (grpc's handler tasks hide theirs from the chains)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ecd_cli import stalls
from ecd_cli.stalls import stop_saying_what_stalls
from edge_node.fair import Meter


def test_a_stop_that_stalls_logs_each_task_chain_of_awaits_and_still_ends(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(stalls, "STOP_SLACK_S", 0.05)
    dumps: list[float] = []
    monkeypatch.setattr(stalls.faulthandler, "dump_traceback_later", dumps.append)
    async def scenario() -> list[str]:
        release = asyncio.Event()

        async def hung_in_a_metered_step() -> None:
            await release.wait()

        async def stop() -> None:
            await Meter().run(hung_in_a_metered_step())

        with caplog.at_level(logging.INFO, "ecd"):
            stopping = asyncio.ensure_future(stop_saying_what_stalls(stop(), "edge-node", 0.0))
            while not caplog.records:  # the warning comes once the 0.05 s pass
                await asyncio.sleep(0.01)
            assert not stopping.done()
            release.set()
            await stopping
        return [r.getMessage() for r in caplog.records]

    (message,) = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert dumps == [0.05]  # every thread's stack, should it still not end
    head, *lines = message.splitlines()
    assert head == "[edge-node] still stopping 0.05 s after SIGTERM; what its tasks wait on:"
    at = lines.index("its own code suspended at:")
    chains, ours = lines[:at], lines[at + 1:]
    assert any(line.startswith("  Meter.run (fair.py:") for line in ours)  # the project's coroutine, found without a task's chain
    assert not any("test_serve_stop.py" in line for line in ours)  # only the project's own code
    stalled = next(c for c in chains if "stop (test_serve_stop.py" in c)
    assert stalled.index("stop (") < stalled.index("__await__ (fair.py") < stalled.index("hung_in_a_metered_step") < stalled.index("wait (locks.py")
    assert stalled.endswith("FutureIter")  # the event's future: nothing further to follow


def test_a_stop_within_its_time_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def stop() -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, "ecd"):
        asyncio.run(stop_saying_what_stalls(stop(), "cloud-server", 5.0))  # due at 10 s: it ends at once
    assert caplog.records == []
