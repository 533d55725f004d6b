"""Where a service's stop stalls, said in its log: what an operator whose SIGTERM seems to hang
(or a CI run that saw one once) needs to find the cause without attaching a debugger.

:func:`stop_saying_what_stalls` awaits the stop. Once it outlasts the grace period by
``STOP_SLACK_S`` it logs one WARNING with every task's chain of awaits and every suspended
coroutine of this project's code (grpc's handler tasks hide their servicers behind Cython, where
no chain reaches), and arms Python's fault handler to write every thread's stack to stderr a little
later — a hang the event loop cannot report (a blocked loop, an executor that will not shut down
after the stop returned) still leaves its trace before a supervisor's SIGKILL.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import types
from typing import Any, Coroutine

log = logging.getLogger("ecd")

STOP_SLACK_S = 5.0  # a stop's own steps past its grace: leaving the cloud (<= 2 s), the servers' 0.5 s
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where this project's packages are installed side by side
OURS = tuple(os.path.join(_HERE, package) + os.sep for package in ("ecd", "ecd_cli", "edge_node", "cloud_server", "device_agent"))


async def stop_saying_what_stalls(stopping: Coroutine[Any, Any, None], service: str, grace_s: float) -> None:
    """Await a service's stop; one still running ``grace_s + STOP_SLACK_S`` later logs what it
    waits on (once; it goes on waiting), and every thread's stack follows ``STOP_SLACK_S`` after."""
    after_s = grace_s + STOP_SLACK_S
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=after_s)
    if not done:
        log.warning("[%s] still stopping %g s after SIGTERM; what its tasks wait on:\n%s\nits own code suspended at:\n%s",
                    service, after_s, "\n".join(waiting_on()), "\n".join(suspended_here()))
        faulthandler.dump_traceback_later(STOP_SLACK_S)  # if it still has not ended, and whatever it is stuck in
    await task


def waiting_on() -> list[str]:
    """Each pending task's chain of awaits, outermost first (``asyncio.Task.get_stack`` shows
    only a suspended coroutine's own frame). A step through a metered awaitable (``edge_node.fair``)
    follows the coroutine it drives."""
    chains = []
    for task in asyncio.all_tasks():
        steps, awaiting = [], task.get_coro()
        while awaiting is not None and len(steps) < 40:
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is None:
                steps.append(type(awaiting).__name__)
                break
            steps.append(f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})")
            awaiting = (getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
                        or getattr(frame.f_locals.get("self"), "coro", None))
        chains.append(f"  {task.get_name()}: " + " -> ".join(steps))
    return chains


def suspended_here(where: tuple[str, ...] = OURS) -> list[str]:
    """Every suspended coroutine and async generator whose code lives under one of the folders
    ``where`` (this project's packages), with the line it waits at, sorted."""
    found = []
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: that reads __class__, which some objects compute (with warnings)
        if kind is types.CoroutineType:
            frame = obj.cr_frame
        elif kind is types.AsyncGeneratorType:
            frame = obj.ag_frame
        else:
            continue
        if frame is not None and frame.f_code.co_filename.startswith(where):
            found.append(f"  {frame.f_code.co_qualname} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})")
    return sorted(found)
