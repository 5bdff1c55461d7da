"""Idle client connections: open N connections to a proxy (each completes
the startup handshake and waits at ReadyForQuery), then read the proxy's
resident memory. Pure asyncio, speaking just enough of the wire protocol
(StartupMessage, trust auth) to log in."""

import asyncio
import struct
import time

from . import procs

PROTOCOL_3 = 196608


async def _login(host, port, user, db, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    writer.write(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)
    await writer.drain()

    async def until_ready():
        while True:
            header = await reader.readexactly(5)
            kind, length = header[:1], struct.unpack("!i", header[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise RuntimeError("server asked for a password (trust expected)")
            if kind == b"E":
                raise RuntimeError(body.replace(b"\0", b" ").decode(errors="replace").strip())
            if kind == b"Z":
                return

    await asyncio.wait_for(until_ready(), timeout)
    return writer


async def open_many(make, n, budget_s, concurrency=200):
    """Opens `n` connections with `make()`, `concurrency` at a time, within
    `budget_s`; returns what opened and the errors of what did not."""
    sem = asyncio.Semaphore(concurrency)
    conns, errors = [], []
    deadline = time.monotonic() + budget_s

    async def one():
        async with sem:
            if time.monotonic() > deadline:
                errors.append("time budget exhausted")
                return
            try:
                conns.append(await make())
            except (OSError, RuntimeError, asyncio.TimeoutError,
                    asyncio.IncompleteReadError) as e:
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one() for _ in range(n)))
    return conns, errors


async def _hold(port, n, pid, user, db, budget_s):
    before = procs.rss_kb(pid)
    started = time.monotonic()
    writers, errors = await open_many(
        lambda: _login("127.0.0.1", port, user, db, 20), n, budget_s)
    opened_s = time.monotonic() - started
    await asyncio.sleep(2)          # let the proxy settle (buffers, tasks)
    after = procs.rss_kb(pid)
    for w in writers:
        try:
            w.write(b"X\0\0\0\4")     # Terminate
            w.close()
        except OSError:
            pass
    await asyncio.sleep(0.5)
    opened = len(writers)
    return {
        "requested": n,
        "opened": opened,
        "failed": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "open_seconds": round(opened_s, 2),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_connection": round((after - before) / opened, 2) if opened else None,
    }


def measure(system, n, user, db, budget_s=180):
    procs.raise_nofile()
    return asyncio.run(_hold(system.port, n, system.pid, user, db, budget_s))
