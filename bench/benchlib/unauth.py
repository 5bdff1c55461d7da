"""Unauthenticated client connections: what a proxy spends on clients that
have not logged in (yet, or ever). The `unauth_memory` measurement.

It starts its own pgstash and PgBouncer (the benchmark's systems use trust
authentication), both asking clients for SCRAM-SHA-256 as one configured
user, with room for 20,000 clients and a 5-minute login timeout, checks
that a real client (psql) logs in through each with the password, then, for
each proxy in turn, opens N connections on loopback from this process
(asyncio; the open-files limit is raised, and the proxies get the same
limit from procs.Supervisor):

  1. N/2 *silent* connections: TCP connected, nothing sent;
  2. N/2 connections *inside a SCRAM exchange*: StartupMessage, the proxy's
     AuthenticationSASL (SCRAM-SHA-256), our SASLInitialResponse
     (client-first-message), the proxy's AuthenticationSASLContinue
     (server-first-message), and then nothing: the exchange waits for the
     client-final-message, which never comes.

The proxy's resident memory (VmRSS) and its open file descriptors are read
before, after step 1 and after step 2 (each after a 2 s settle); the file
descriptors prove that the proxy accepted every connection (one the kernel
queued but the proxy never accepted costs it nothing). Connections the
proxy closed meanwhile are counted. Everything is closed at the end, and
both proxies are stopped.
"""

import asyncio
import os
import secrets
import struct
import time

from . import procs, systems
from .idle import open_many

PROTOCOL_3 = 196608
USER = "bench_scram"
LOGIN_TIMEOUT_S = 300
MAX_CLIENT_CONN = 20000


def _msg(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


async def _read(reader):
    header = await reader.readexactly(5)
    length = struct.unpack("!i", header[1:])[0]
    return header[:1], await reader.readexactly(length - 4)


def _auth_code(kind, body):
    if kind == b"E":
        raise RuntimeError(body.replace(b"\0", b" ").decode(errors="replace").strip())
    if kind != b"R":
        raise RuntimeError(f"expected an authentication request, got {kind!r}")
    return struct.unpack("!i", body[:4])[0]


async def _silent(port, timeout):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)


async def _in_scram(port, user, db, timeout):
    """Log in up to the server-first-message, then stop talking."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                            timeout)
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    writer.write(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)

    async def exchange():
        kind, body = await _read(reader)
        if _auth_code(kind, body) != 10 or b"SCRAM-SHA-256\0" not in body[4:]:
            raise RuntimeError(f"no SCRAM-SHA-256 offered: {body!r}")
        first = b"n,,n=,r=" + secrets.token_urlsafe(18).encode()
        writer.write(_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        kind, body = await _read(reader)
        if _auth_code(kind, body) != 11 or b"r=" not in body[4:]:
            raise RuntimeError(f"expected AuthenticationSASLContinue, got {body!r}")

    await asyncio.wait_for(exchange(), timeout)
    return reader, writer


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def _hold(port, n, pid, db, budget_s):
    silent_n = n // 2
    scram_n = n - silent_n
    before, fds_before = procs.rss_kb(pid), fd_count(pid)
    started = time.monotonic()
    silent, e1 = await open_many(lambda: _silent(port, 20), silent_n, budget_s)
    await asyncio.sleep(2)
    mid, fds_mid = procs.rss_kb(pid), fd_count(pid)
    scram, e2 = await open_many(lambda: _in_scram(port, USER, db, 20), scram_n, budget_s)
    opened_s = time.monotonic() - started
    await asyncio.sleep(2)
    after, fds_after = procs.rss_kb(pid), fd_count(pid)
    conns = silent + scram
    # A connection the proxy closed shows as end of file (the transport
    # keeps reading in the background).
    closed = sum(1 for r, _ in conns if r.at_eof())
    for _, w in conns:
        try:
            w.close()
        except OSError:
            pass
    await asyncio.sleep(1)
    opened = len(conns)
    errors = e1 + e2

    def per(delta_kb, count):
        return round(delta_kb / count, 2) if count and delta_kb is not None else None

    return {
        "requested": n,
        "opened": opened,
        "silent": len(silent),
        "in_scram": len(scram),
        "failed": len(errors),
        "first_errors": sorted(set(errors))[:3],
        "closed_by_proxy": closed,
        "open_seconds": round(opened_s, 2),
        "rss_before_kb": before,
        "rss_silent_kb": mid,
        "rss_after_kb": after,
        "fds_before": fds_before,
        "fds_silent": fds_mid,
        "fds_after": fds_after,
        "kb_per_connection": per(after - before, opened),
        "kb_per_silent": per(mid - before, len(silent)),
        "kb_per_in_scram": per(after - mid, len(scram)),
    }


def _check_login(port, password):
    """A real client logs in with the password through SCRAM (and a wrong
    password is refused): the proxy really asks for it."""
    base = [f"{systems.PG_BIN}/psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port),
            "-U", USER, "-d", systems.DB, "-c", "SELECT 1"]
    env = dict(os.environ, PGSSLMODE="disable", PGPASSWORD=password, PGCONNECT_TIMEOUT="10")
    ok = procs.run(base, env=env, check=False, timeout=30)
    env["PGPASSWORD"] = password + "-wrong"
    bad = procs.run(base, env=env, check=False, timeout=30)
    if ok.returncode != 0 or ok.stdout.strip() != "1":
        raise RuntimeError(f"SCRAM login through port {port} failed: {ok.stderr.strip()}")
    if bad.returncode == 0:
        raise RuntimeError(f"port {port} accepted a wrong password")


def measure(tmp, binary, pg_port, n, which, log, budget_s=240):
    """Start the SCRAM-authenticating proxies in `which` ("pgstash",
    "pgbouncer"), measure each with n connections, stop them.
    -> {name: results, "configs": {name: {file: text}}}."""
    procs.raise_nofile()
    password = secrets.token_urlsafe(16)
    systems.psql(pg_port, f"DROP ROLE IF EXISTS {USER}; CREATE ROLE {USER} LOGIN")
    d = os.path.join(tmp, "unauth")
    os.makedirs(d, exist_ok=True)
    ports = iter(procs.free_ports(4))
    sup = procs.Supervisor()
    out = {"configs": {}}
    try:
        started = []
        if "pgstash" in which:
            extra = (f"[client]\nmax_client_conn = {MAX_CLIENT_CONN}\n"
                     f'login_timeout = "{LOGIN_TIMEOUT_S // 60}m"\n'
                     '[auth]\ntype = "scram-sha-256"\n'
                     f'[[auth.users]]\nname = "{USER}"\npassword = "{password}"\n')
            s = systems.start_pgstash(sup, d, binary, "pgstash_scram",
                                      "pgstash, SCRAM authentication", next(ports),
                                      next(ports), pg_port, 20, extra_config=extra)
            s.configs["pgstash.toml"] = s.configs["pgstash.toml"].replace(
                password, "(its password)")
            started.append(("pgstash", s))
        if "pgbouncer" in which:
            s = systems.start_pgbouncer(sup, d, next(ports), pg_port, 20, MAX_CLIENT_CONN,
                                        key="pgbouncer_scram",
                                        label="PgBouncer, SCRAM authentication",
                                        scram_user=(USER, password),
                                        login_timeout=LOGIN_TIMEOUT_S)
            started.append(("pgbouncer", s))
        for name, s in started:
            _check_login(s.port, password)
            out["configs"][name] = s.configs
        for name, s in started:
            log(f"unauth: opening {n} unauthenticated connections to {s.key} "
                f"(half silent, half inside a SCRAM exchange)")
            r = asyncio.run(_hold(s.port, n, s.pid, systems.DB, budget_s))
            r["exit_code"] = s.exit_code()
            out[name] = r
            log(f"unauth {s.key}: {r['silent']} silent + {r['in_scram']} in SCRAM opened, "
                f"{r['failed']} failed, {r['closed_by_proxy']} closed by the proxy, "
                f"fds {r['fds_before']} -> {r['fds_after']}, RSS {r['rss_before_kb']} -> "
                f"{r['rss_silent_kb']} -> {r['rss_after_kb']} KiB: "
                f"{r['kb_per_connection']} KiB/connection (silent {r['kb_per_silent']}, "
                f"in SCRAM {r['kb_per_in_scram']}) {r['first_errors']}")
            time.sleep(2)
    finally:
        sup.stop_all(log)
    return out
