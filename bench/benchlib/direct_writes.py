"""The direct-writes workload: writes that bypass the system under test.

A writer updates a small hot set of accounts *directly on Postgres* at a
fixed rate (`UPDATE pgbench_accounts SET abalance = <seq> WHERE aid = <k>`,
autocommit, one row after the other; above 100 writes/s four writers share
the schedule, each owning a quarter of the rows, so that one session's round
trips do not hold the rate down), noting when each write is
acknowledged; readers read the same rows *through the system*
(`SELECT abalance FROM pgbench_accounts WHERE aid = $1`, the
`account_balance` rule, extended protocol) in tight loops, noting when each
read started and finished and what it returned. The written values only
grow (a sequence that starts above the rows' current values), so a read
returning `v` has seen every write of that row up to `v`.

From the two ledgers:
- commit-to-invalidation latency of a write: from its acknowledgement to
  the end of the first read that returned it or a later value (so it
  includes up to one read of the row: the `direct` system, with no cache,
  shows that floor). A write no read returned before the run ended (the
  readers go on for `TAIL_S` after the last write) was never seen.
- a stale read: it returned a value older than one acknowledged more than
  `max_lag` before the read started (the bound of guarantee G8). Its
  staleness is how long before the read started the first newer value was
  acknowledged.

Writers and readers are separate processes (no shared interpreter lock;
the readers run at nice 10 so that their tight loops do not keep the writer
under its rate on a small machine),
speaking the wire protocol themselves (pgwire.py: no driver to install);
their clocks are the same CLOCK_MONOTONIC. Each writer's session sets
`synchronous_commit = on` (Postgres' default; the benchmark cluster has it
off for the pgbench workloads): logical decoding streams only WAL that is
flushed, so an asynchronous commit would reach the replication stream only
when the WAL writer flushes it (`wal_writer_delay`, 200 ms) — that would
measure the WAL writer, not pgstash.
"""

import bisect
import multiprocessing
import os
import signal
import time
import traceback
from array import array

from . import pgwire
from .systems import DB, PG_USER

RATES = (20, 1000)     # direct writes per second, one run each
KEYS = 12              # the hot set: accounts FIRST_AID .. FIRST_AID + KEYS - 1
FIRST_AID = 2001       # rows no other workload writes (they write aid <= 1000)
READERS = 2            # reader processes, each in a tight loop over the hot set
WRITERS_FAST = 4       # writer processes at rates above 100/s (KEYS is a multiple)
READER_NICE = 10       # the readers' nice value (the writer and the servers keep 0)
TAIL_S = 1.0           # readers go on this long after the last write
MAX_LAG_S = 0.5        # pgstash's [replication] max_lag (the default)
assert KEYS % WRITERS_FAST == 0, "a row belongs to one writer"
READ_SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
HOST = "127.0.0.1"


def _child_signals():
    # The parent's handlers raise its Stop exception; a child just ends.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def writers_for(rate):
    """Writer processes for a rate: one, or several when one round trip
    per write (a flushed commit) would hold a single session under it on a
    loaded machine."""
    return 1 if rate <= 100 else WRITERS_FAST


def _writer(pipe, port, rate, base, nth, of):
    _child_signals()
    try:
        conn = pgwire.Conn(HOST, port, PG_USER, DB, application_name="bench-direct-writer")
        conn.simple("SET synchronous_commit = on")
        pipe.send("ready")
        t0, t_end = pipe.recv()
        rows, sent, acked, values = array("i"), array("q"), array("q"), array("q")
        errors, i = [], 0
        period = 1e9 / rate
        while True:
            g = i * of + nth      # this write's place in the whole schedule
            due = t0 + int(g * period)
            now = time.monotonic_ns()
            if due >= t_end or now >= t_end:
                break   # a writer that fell behind stops on time too
            if due > now:
                time.sleep((due - now) / 1e9)
            # A row belongs to one writer (KEYS is a multiple of `of`), and
            # its values grow with the schedule.
            k, v = g % KEYS, base + g
            s = time.monotonic_ns()
            try:
                conn.simple(f"UPDATE pgbench_accounts SET abalance = {v} "
                            f"WHERE aid = {FIRST_AID + k}")
                a = time.monotonic_ns()
                rows.append(k)
                sent.append(s)
                acked.append(a)
                values.append(v)
            except (pgwire.PgError, OSError) as e:
                errors.append(str(e))
                if not isinstance(e, pgwire.PgError):
                    break
            i += 1
        conn.close()
        pipe.send({"rows": rows, "sent": sent, "acked": acked, "values": values,
                   "errors": errors[:5], "error_count": len(errors)})
    except BaseException:  # noqa: BLE001 - reported to the parent
        pipe.send({"fatal": traceback.format_exc(limit=3)})


def _reader(pipe, port, offset):
    _child_signals()
    try:
        # Tight loops, but below the writer (and the servers) in the CPU's
        # queue: on a small machine they would otherwise hold the writer
        # under its rate.
        os.nice(READER_NICE)
        conn = pgwire.Conn(HOST, port, PG_USER, DB, application_name="bench-direct-reader")
        pipe.send("ready")
        t0, t_end = pipe.recv()
        now = time.monotonic_ns()
        if t0 > now:
            time.sleep((t0 - now) / 1e9)
        rows, started, finished, values = array("i"), array("q"), array("q"), array("q")
        errors, n = [], offset
        aids = [str(FIRST_AID + k) for k in range(KEYS)]
        while True:
            s = time.monotonic_ns()
            if s >= t_end:
                break
            k = n % KEYS
            n += 1
            try:
                got = conn.extended(READ_SQL, (aids[k],))
                f = time.monotonic_ns()
                rows.append(k)
                started.append(s)
                finished.append(f)
                values.append(int(got[0][0]))
            except (pgwire.PgError, OSError, IndexError, ValueError, TypeError) as e:
                errors.append(str(e))
                if not isinstance(e, pgwire.PgError):
                    break
        conn.close()
        pipe.send({"rows": rows, "started": started, "finished": finished,
                   "values": values, "errors": errors[:5], "error_count": len(errors)})
    except BaseException:  # noqa: BLE001 - reported to the parent
        pipe.send({"fatal": traceback.format_exc(limit=3)})


def prepare(direct_port):
    """The first value to write: above every value the hot rows hold (read
    directly), so that written values only grow, across runs too."""
    conn = pgwire.Conn(HOST, direct_port, PG_USER, DB)
    try:
        rows = conn.simple(f"SELECT coalesce(max(abalance), 0) FROM pgbench_accounts "
                           f"WHERE aid BETWEEN {FIRST_AID} AND {FIRST_AID + KEYS - 1}")
        return max(0, int(rows[0][0])) + 1
    finally:
        conn.close()


def run(system_port, direct_port, rate, seconds):
    """One run: the writer at `rate` for `seconds`, the readers for `seconds`
    + TAIL_S. -> the raw ledgers and the run's timing (see `analyze`)."""
    base = prepare(direct_port)
    ctx = multiprocessing.get_context("fork")
    procs, pipes = [], []
    nw = writers_for(rate)
    specs = [(_writer, (direct_port, rate, base, j, nw)) for j in range(nw)]
    specs += [(_reader, (system_port, r * KEYS // READERS)) for r in range(READERS)]
    try:
        for fn, args in specs:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=fn, args=(child, *args), daemon=True)
            p.start()
            child.close()
            procs.append(p)
            pipes.append(parent)
        for p in pipes:
            if not p.poll(30):
                raise RuntimeError("a direct_writes client did not connect within 30 s")
            first = p.recv()
            if first != "ready":
                raise RuntimeError(f"a direct_writes client failed: {first.get('fatal')}")
        t0 = time.monotonic_ns() + 100_000_000
        t_writes = t0 + int(seconds * 1e9)
        t_reads = t_writes + int(TAIL_S * 1e9)
        for p in pipes[:nw]:
            p.send((t0, t_writes))
        for p in pipes[nw:]:
            p.send((t0, t_reads))
        out = []
        for p in pipes:
            if not p.poll(seconds + TAIL_S + 60):
                raise RuntimeError("a direct_writes client did not finish")
            out.append(p.recv())
        for o in out:
            if "fatal" in o:
                raise RuntimeError(f"a direct_writes client failed: {o['fatal']}")
        return {"writers": out[:nw], "readers": out[nw:], "t0": t0, "t_writes": t_writes,
                "t_reads": t_reads, "base": base, "rate": rate}
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _pct(values, q):
    """Nearest-rank percentile of sorted values (float('inf') = never seen)."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _ms(ns):
    return None if ns is None or ns == float("inf") else round(ns / 1e6, 3)


def analyze(raw, max_lag_s=MAX_LAG_S):
    """The ledgers -> commit-to-invalidation latency, stale reads, rates."""
    ws = raw["writers"]
    w = {f: [x for one in ws for x in one[f]] for f in ("rows", "sent", "acked", "values")}
    w["error_count"] = sum(one["error_count"] for one in ws)
    w["errors"] = [e for one in ws for e in one["errors"]]
    writes = len(w["values"])
    max_lag = int(max_lag_s * 1e9)
    # Per hot row: the acknowledged writes in order (values and acks grow).
    w_vals = [[] for _ in range(KEYS)]
    w_acks = [[] for _ in range(KEYS)]
    for v, a, k in sorted(zip(w["values"], w["acked"], w["rows"])):
        w_vals[k].append(v)
        w_acks[k].append(a)
    reads = []
    for r in raw["readers"]:
        reads += list(zip(r["finished"], r["started"], r["rows"], r["values"]))
    reads.sort()
    # First read (by end time) returning each write or a later value.
    nxt = [0] * KEYS
    first_seen = []
    stale, max_staleness, examples, shown = 0, 0, [], set()
    for f, s, k, v in reads:
        vals, acks = w_vals[k], w_acks[k]
        i = nxt[k]
        while i < len(vals) and vals[i] <= v and acks[i] < f:
            first_seen.append(f - acks[i])
            i += 1
        nxt[k] = i
        # The first write newer than what was read: acknowledged how long
        # before this read started?
        j = bisect.bisect_right(vals, v)
        if j < len(vals) and acks[j] < s:
            age = s - acks[j]
            max_staleness = max(max_staleness, age)
            if age > max_lag:
                stale += 1
                if len(examples) < 5 and (k, v) not in shown:
                    shown.add((k, v))   # one example per row and value read
                    newest = vals[bisect.bisect_left(acks, s - max_lag) - 1]
                    examples.append(
                        f"aid {FIRST_AID + k}: read {v} at +{(s - raw['t0']) / 1e9:.3f} s, "
                        f"but {newest} was acknowledged more than {max_lag_s * 1000:.0f} ms "
                        f"before (the first newer value {age / 1e6:.0f} ms before)")
    unseen = writes - len(first_seen)
    lat = sorted(first_seen) + [float("inf")] * unseen
    acks = sorted(a - s for s, a in zip(w["sent"], w["acked"]))
    span_w = (max(raw["t_writes"], max(w["acked"])) - raw["t0"]) / 1e9 if writes else 0
    span_r = (raw["t_reads"] - raw["t0"]) / 1e9
    read_errors = sum(r["error_count"] for r in raw["readers"])
    return {
        "rate": raw["rate"],
        "writers": len(ws),
        "writes": writes,
        "writes_per_s": round(writes / span_w, 1) if span_w else None,
        "write_ack_p50_ms": _ms(_pct(acks, 0.5)),
        "write_ack_p99_ms": _ms(_pct(acks, 0.99)),
        "seen": len(first_seen),
        "unseen": unseen,
        "lag_p50_ms": _ms(_pct(lat, 0.5)),
        "lag_p99_ms": _ms(_pct(lat, 0.99)),
        "lag_max_ms": _ms(lat[-1] if lat else None),
        # A percentile that falls on a write no read returned.
        "lag_p50_never": bool(lat) and _pct(lat, 0.5) == float("inf"),
        "lag_p99_never": bool(lat) and _pct(lat, 0.99) == float("inf"),
        "lag_max_never": unseen > 0,
        "reads": len(reads),
        "reads_per_s": round(len(reads) / span_r, 1) if span_r else None,
        "stale_reads": stale,
        "max_staleness_ms": _ms(max_staleness),
        "stale_examples": examples,
        "write_errors": w["error_count"],
        "read_errors": read_errors,
        "errors": (w["errors"] + [e for r in raw["readers"] for e in r["errors"]])[:5],
        "ok": w["error_count"] == 0 and read_errors == 0 and writes > 0 and bool(reads),
    }
