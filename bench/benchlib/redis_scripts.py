"""What one Redis command of pgstash's costs a Redis node on this machine:
`redis-benchmark` runs the store's own Lua scripts (read from
proxy/src/cache/store/redis/scripts.rs, so they are this tree's) with
EVALSHA against a throwaway redis-server, at 1 client (latency p50) and at
32 clients (a busy node: redis-server is single threaded, and
redis-benchmark runs on the other core); three times each, interleaved,
medians kept. Besides calls per second, the node's own CPU per call (`INFO
cpu` before and after each run), which does not depend on whether the
client or the node was the bottleneck.

The keys are those of a hit on a point select: the epoch and one table
version in the meta hash tag, an entry framed with their stamp (a ~100-byte
answer) and its fill lease. These ceilings feed the capacity model of the
cluster report (commands per hit, per node, against calls per second a node
can run).
"""

import os
import re
import statistics
import subprocess

from . import procs, systems
from .cluster import call, info

SCRIPTS_RS = os.path.join("proxy", "src", "cache", "store", "redis", "scripts.rs")
PREFIX = "pgstash:"
TAG = "{" + PREFIX + "}"
EPOCH, EPOCH_VALUE = TAG + "epoch", "0123456789abcdef"
VERSION, OTHER_VERSION = TAG + "v:bench.public.pgbench_accounts", TAG + "v:bench.public.other"
HEX = "ab" * 32
ENTRY, LEASE = f"{PREFIX}e:{{{HEX}}}", f"{PREFIX}f:{{{HEX}}}"
HOLDER, LEASE_MS, TTL_MS = "00000000deadbeef", "5000", "600000"
STAMP = f"{EPOCH_VALUE}.7"
FRAMED = STAMP + "\n" + "x" * 100


def lua(repo):
    """The store's scripts by name (lookup, meta, entry, put, invalidate),
    as scripts.rs builds them."""
    text = open(os.path.join(repo, SCRIPTS_RS)).read()
    consts = dict(re.findall(r'const (\w+): &str = r#"(.*?)"#;', text, re.S))
    bodies = dict(re.findall(r'fn (\w+)\(\) -> String \{\s*format!\(\s*"\{CLAIM\}\{\}",'
                             r'\s*r#"(.*?)"#', text, re.S))
    claim = consts["CLAIM"]
    return {"lookup": claim + bodies["lookup_lua"], "meta": consts["META_LUA"],
            "entry": claim + bodies["entry_lua"], "put": consts["PUT_LUA"],
            "invalidate": consts["INVALIDATE_LUA"]}


def tests(shas):
    """(name, what, command args) of each benchmark."""
    return [
        ("get", "GET of the entry (the floor of any call)", ["GET", ENTRY]),
        ("lookup_hit", "one Redis: the whole lookup script, a hit (epoch, version, entry, "
         "PTTL)", ["EVALSHA", shas["lookup"], "4", EPOCH, VERSION, ENTRY, LEASE, HOLDER,
                   LEASE_MS]),
        ("meta", "Cluster: the meta script (MGET of epoch + version)",
         ["EVALSHA", shas["meta"], "2", EPOCH, VERSION]),
        ("entry_hit", "Cluster: the entry script, a hit (GET + PTTL)",
         ["EVALSHA", shas["entry"], "2", ENTRY, LEASE, HOLDER, LEASE_MS]),
        ("put", "a fill: SET framed entry PX + release the lease",
         ["EVALSHA", shas["put"], "2", ENTRY, LEASE, FRAMED, TTL_MS, HOLDER]),
        ("invalidate", "an invalidation of one table: INCR + PUBLISH",
         ["EVALSHA", shas["invalidate"], "1", OTHER_VERSION, TAG + "inv"]),
    ]


REPEATS = 3


def _median(results):
    good = [r for r in results if "rps" in r]
    if not good:
        return results[-1]
    return {k: statistics.median(r[k] for r in good)
            for k in ("rps", "p50_ms", "avg_ms", "cpu_us_per_call")}


def _cpu_s(port):
    i = info(port, "cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def _bench(port, args, clients, n):
    """One redis-benchmark run: its calls/s and latencies, and the CPU the
    node itself spent per call (`INFO cpu` before and after: what the node
    pays whether or not the client was the bottleneck)."""
    cpu = _cpu_s(port)
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c",
                        str(clients), "-n", str(n), "--csv"] + args,
                       capture_output=True, text=True, timeout=300)
    cpu = _cpu_s(port) - cpu
    rows = [ln.replace('"', "").split(",") for ln in r.stdout.splitlines()]
    head = next((x for x in rows if x and x[0] == "test"), None)
    row = next((x for x in rows if x and x[0] != "test" and len(x) > 3), None)
    if not head or not row:
        return {"error": (r.stdout + r.stderr)[-300:]}
    d = dict(zip(head, row))
    return {"rps": float(d["rps"]), "p50_ms": float(d["p50_latency_ms"]),
            "avg_ms": float(d["avg_latency_ms"]), "cpu_us_per_call": cpu * 1e6 / n}


def measure(repo, tmp, log):
    """-> {"tests": [{name, what, c1: {rps, p50_ms}, c32: {rps, p50_ms}}],
    "scripts": {name: lua}} or {"error": ...}."""
    try:
        scripts = lua(repo)
    except (OSError, KeyError) as e:
        return {"error": f"could not read the scripts from {SCRIPTS_RS}: {e}"}
    port = procs.free_ports(1)[0]
    sup = procs.Supervisor()
    out = {"scripts": scripts, "tests": []}
    try:
        systems.start_redis(sup, os.path.join(tmp, "redis-scripts"), port)
        call(port, "SET", EPOCH, EPOCH_VALUE)
        call(port, "SET", VERSION, "7")
        call(port, "SET", ENTRY, FRAMED, "PX", TTL_MS)
        shas = {k: call(port, "SCRIPT", "LOAD", v) for k, v in scripts.items()}
        # Each test REPEATS times, interleaved, so that a burst of other
        # load on the machine touches one repetition of each rather than
        # all of one; the median of each figure is kept.
        reps = {name: {"c1": [], "c32": []} for name, _, _ in tests(shas)}
        for _ in range(REPEATS):
            for name, _, args in tests(shas):
                reps[name]["c1"].append(_bench(port, args, 1, 20000))
                reps[name]["c32"].append(_bench(port, args, 32, 100000))
        for name, what, _ in tests(shas):
            t = {"name": name, "what": what, "c1": _median(reps[name]["c1"]),
                 "c32": _median(reps[name]["c32"]), "repeats": reps[name]}
            out["tests"].append(t)
            log(f"redis-benchmark {name:11} -c 1: {t['c1']}  -c 32: {t['c32']}")
        # The hit scripts must have found the entry (a miss would measure
        # the miss path): the lookup's reply carries it.
        reply = call(port, "EVALSHA", shas["lookup"], "4", EPOCH, VERSION, ENTRY, LEASE,
                     HOLDER, LEASE_MS)
        out["lookup_hit_checked"] = bool(reply and reply[1] == FRAMED)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        out["error"] = str(e)[-300:]
    finally:
        sup.stop_all(log)
    return out
