"""A userspace delay stage for the testbed: a TCP relay that holds every chunk for a one-way delay.

The kernel of the machines we test on has no ``netem``, so ``tc`` can shape bandwidth (``tbf``) but
not add latency. This relay listens in one namespace and forwards each connection to ``--to``; each
chunk read in either direction is written out ``--delay-ms`` after it arrived (order kept, chunks
pipelined: the delay adds latency without lowering the throughput the ``tbf`` allows). One relay on
each link, holding chunks for half the profile's RTT in each direction, adds the whole RTT.

What it does not model, unlike netem: it terminates TCP, so the sender's congestion control sees
the shaped link's own (sub-millisecond) RTT, not the added one; a real 70 ms path would ramp up
slower after a loss. For the steady streams measured here that is the honest trade-off.

Run as ``python benchmarks/_testbed_relay.py --listen HOST:PORT --to HOST:PORT --delay-ms MS`` (port
0 = any); it prints ``{"ready": "relay", "port": N}`` and runs until SIGTERM, or until its parent
(the testbed harness) dies.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import signal
import time

CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk due ``delay_s`` after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic() + delay_s, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait((0.0, b""))
        try:
            await sender
        except (ConnectionError, OSError):
            pass


async def _serve(listen: tuple[str, int], to: tuple[str, int], delay_s: float) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection(*to)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(_pump(c_reader, u_writer, delay_s), _pump(u_reader, c_writer, delay_s))

    server = await asyncio.start_server(handle, *listen)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"ready": "relay", "port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the harness
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0 = any)")
    p.add_argument("--to", required=True, help="HOST:PORT to forward each connection to")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay added in each direction")
    a = p.parse_args()
    asyncio.run(_serve(_hostport(a.listen), _hostport(a.to), a.delay_ms / 1000.0))


if __name__ == "__main__":
    main()
