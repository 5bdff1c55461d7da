"""What one Redis command of pgstash's costs a Redis node on this machine:
`redis-benchmark` runs the store's own Lua scripts (read from
proxy/src/cache/store/redis/scripts.rs, so they are this tree's) with
EVALSHA against a throwaway redis-server, at 1 client (latency p50) and at
32 clients (a busy node: redis-server is single threaded, and
redis-benchmark runs on the other core); three times each, interleaved,
medians kept. Besides calls per second, the node's own CPU per call (`INFO
cpu` before and after each run), which does not depend on whether the
client or the node was the bottleneck.

The keys are those of a point select in one group (see layout.rs): the
group's epoch and one table version, the entry framed with their stamp (a
~100-byte answer) and its fill lease, all under the hash tag `{prefix}`.
A lookup is the same script on one Redis and on a Cluster node (there, in
the entry's group). A write runs one `invalidate` script per node: on one
Redis over its one group's version key; on a Cluster node serving several
groups, the `allow-cross-slot-keys` variant over one version key per group
(GROUPS_PER_NODE of them, what a master of a 3-master cluster serves).
These ceilings feed the capacity model of the cluster report.
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
TABLE, OTHER_TABLE = "bench.public.pgbench_accounts", "bench.public.other"
VERSION = TAG + "v:" + TABLE
HEX = "ab" * 32
ENTRY, LEASE = f"{TAG}e:{HEX}", f"{TAG}f:{HEX}"
MISSING_HEX = "cd" * 32
MISSING_ENTRY, MISSING_LEASE = f"{TAG}e:{MISSING_HEX}", f"{TAG}f:{MISSING_HEX}"
HOLDER, LEASE_MS, TTL_MS = "00000000deadbeef", "5000", "600000"
STAMP = f"{EPOCH_VALUE}.7"
FRAMED = STAMP + "\n" + "x" * 100
CHANNEL = TAG + "inv"
# Groups a master of a 3-master cluster serves (16 groups: 5 or 6 each).
GROUPS_PER_NODE = 6
GROUP_VERSIONS = [TAG + "v:" + OTHER_TABLE] + [
    "{" + f"{PREFIX}#{n}" + "}v:" + OTHER_TABLE for n in range(1, GROUPS_PER_NODE)]


def lua(repo):
    """The store's scripts by name (lookup, put, release, invalidate, and
    invalidate_many: the cross-slot variant), as scripts.rs builds them."""
    text = open(os.path.join(repo, SCRIPTS_RS)).read()
    consts = dict(re.findall(r'const (\w+): &str = r#"(.*?)"#;', text, re.S))
    bodies = dict(re.findall(r'fn (\w+)\(\) -> String \{\s*format!\(\s*"\{CLAIM\}\{\}",'
                             r'\s*r#"(.*?)"#', text, re.S))
    # `across_slots`: format!("#!lua flags=…\n{KEYS_OF_CALL}{lua}")
    shebang = re.search(r'format!\("(#!lua[^"\\]*)\\n\{KEYS_OF_CALL\}\{lua\}"\)', text)
    if not shebang:
        raise KeyError("across_slots")
    keys_of_call, invalidate = consts["KEYS_OF_CALL"], consts["INVALIDATE_LUA"]
    return {"lookup": consts["CLAIM"] + bodies["lookup_lua"], "put": consts["PUT_LUA"],
            "release": consts["RELEASE_LUA"], "invalidate": keys_of_call + invalidate,
            "invalidate_many": shebang.group(1) + "\n" + keys_of_call + invalidate}


def tests(shas):
    """(name, what, command args) of each benchmark."""
    return [
        ("get", "GET of the entry (the floor of any call)", ["GET", ENTRY]),
        ("lookup_hit", "a lookup that hits (GET epoch, GET version, GET entry, PTTL); "
         "the same on one Redis and on a Cluster node",
         ["EVALSHA", shas["lookup"], "4", EPOCH, VERSION, ENTRY, LEASE, HOLDER, LEASE_MS]),
        ("lookup_miss", "a lookup that misses (no entry; the fill lease, already this "
         "instance's, is read)",
         ["EVALSHA", shas["lookup"], "4", EPOCH, VERSION, MISSING_ENTRY, MISSING_LEASE,
          HOLDER, LEASE_MS]),
        ("put", "a fill: SET framed entry PX + release the lease",
         ["EVALSHA", shas["put"], "2", ENTRY, LEASE, FRAMED, TTL_MS, HOLDER]),
        ("invalidate", "a write of one table on one Redis (one group): INCR + PUBLISH",
         ["EVALSHA", shas["invalidate"], "1", GROUP_VERSIONS[0], CHANNEL, "1"]),
        ("invalidate_many", f"a write of one table on a Cluster master serving "
         f"{GROUPS_PER_NODE} groups (allow-cross-slot-keys): {GROUPS_PER_NODE} INCR + "
         "1 PUBLISH",
         ["EVALSHA", shas["invalidate_many"], "1", GROUP_VERSIONS[0], CHANNEL, "1"]
         + GROUP_VERSIONS),
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


def _checks(port, shas):
    """Each script did what its test says: the hit found the entry, the
    miss found none, the cross-slot invalidation bumped every group."""
    hit = call(port, "EVALSHA", shas["lookup"], "4", EPOCH, VERSION, ENTRY, LEASE,
               HOLDER, LEASE_MS)
    miss = call(port, "EVALSHA", shas["lookup"], "4", EPOCH, VERSION, MISSING_ENTRY,
                MISSING_LEASE, HOLDER, LEASE_MS)
    before = [int(call(port, "GET", k) or 0) for k in GROUP_VERSIONS]
    bumped = call(port, "EVALSHA", shas["invalidate_many"], "1", GROUP_VERSIONS[0], "", "0",
                  *GROUP_VERSIONS)
    return {"lookup_hit": bool(hit and hit[1] == FRAMED),
            "lookup_miss": bool(miss and miss[1] is None),
            "invalidate_many": [int(v) for v in bumped] == [b + 1 for b in before]}


def measure(repo, tmp, log):
    """-> {"tests": [{name, what, c1: {rps, p50_ms}, c32: {rps, p50_ms}}],
    "scripts": {name: lua}, "checked": {…}} or {"error": ...}."""
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
            log(f"redis-benchmark {name:15} -c 1: {t['c1']}  -c 32: {t['c32']}")
        out["checked"] = _checks(port, shas)
        out["lookup_hit_checked"] = out["checked"]["lookup_hit"]
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        out["error"] = str(e)[-300:]
    finally:
        sup.stop_all(log)
    return out
