"""A service's stop that outlasts its grace period says in the log what it waits on, once, and is
still awaited to its end (``ecd_cli.serve.stop_saying_what_stalls``): an operator whose SIGTERM
seems to hang reads where it hangs, through the edge's metered awaitables too."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ecd_cli.serve import stop_saying_what_stalls
from edge_node.fair import Meter


def test_a_stop_that_stalls_logs_each_task_chain_of_awaits_and_still_ends(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[str]:
        release = asyncio.Event()

        async def hung_in_a_metered_step() -> None:
            await release.wait()

        async def stop() -> None:
            await Meter().run(hung_in_a_metered_step())

        with caplog.at_level(logging.INFO, "ecd"):
            stopping = asyncio.ensure_future(stop_saying_what_stalls(stop(), "edge-node", 0.05))
            while not caplog.records:  # the warning comes once the 0.05 s pass
                await asyncio.sleep(0.01)
            assert not stopping.done()
            release.set()
            await stopping
        return [r.getMessage() for r in caplog.records]

    (message,) = asyncio.run(asyncio.wait_for(scenario(), 10))
    head, *chains = message.splitlines()
    assert head == "[edge-node] still stopping 0.05 s after SIGTERM; what its tasks wait on:"
    stalled = next(c for c in chains if "stop (test_serve_stop.py" in c)
    assert stalled.index("stop (") < stalled.index("__await__ (fair.py") < stalled.index("hung_in_a_metered_step") < stalled.index("wait (locks.py")
    assert stalled.endswith("FutureIter")  # the event's future: nothing further to follow


def test_a_stop_within_its_time_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def stop() -> None:
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, "ecd"):
        asyncio.run(stop_saying_what_stalls(stop(), "cloud-server", 5.0))
    assert caplog.records == []
