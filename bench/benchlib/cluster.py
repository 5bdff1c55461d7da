"""The Redis servers pgstash's Redis systems use, seen node by node: the
single throwaway redis-server (started by systems.start_redis) and a local
Redis Cluster the bench starts and stops itself (by default 3 masters with one
replica each: `redis-server --cluster-enabled yes` in the run's temporary
directory, joined by `redis-cli --cluster create`).

For each measured run of a Redis system, bench/run takes a snapshot of
every node before and after it (`INFO commandstats` and `INFO cpu`, over a
minimal RESP client of our own, no process per call): the deltas are the
commands each node ran for that run, their server-side time, and the node's
CPU. After the runs, `keys` counts each master's keys by kind (entries,
fill leases, meta keys, groups) with SCAN: how the cache and the store's
groups (see proxy/src/cache/store/redis/layout.rs) spread over the masters.
"""

import os
import socket
import time

from . import procs

NODE_TIMEOUT_MS = 5000   # cluster-node-timeout: no failover is wanted during a run


# ---------------------------------------------------------------- RESP

class Resp:
    """One connection to a Redis node; `call` sends one command and reads
    its reply (bulk and simple strings as str, integers, arrays, errors as
    RuntimeError)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"unexpected RESP reply {line[:40]!r}")


def call(port, *args):
    c = Resp(port)
    try:
        return c.call(*args)
    finally:
        c.close()


def info(port, *sections):
    """INFO sections as {field: value} (numbers as float where they parse)."""
    out = {}
    for line in call(port, "INFO", *sections).splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def commandstats(raw):
    """{command: {calls, usec, failed}} from INFO commandstats' fields."""
    out = {}
    for k, v in raw.items():
        if not k.startswith("cmdstat_"):
            continue
        f = dict(x.split("=", 1) for x in v.split(","))
        out[k[len("cmdstat_"):]] = {
            "calls": int(f.get("calls", 0)), "usec": int(f.get("usec", 0)),
            "failed": int(f.get("failed_calls", 0)) + int(f.get("rejected_calls", 0))}
    return out


# ---------------------------------------------------------------- nodes

class Nodes:
    """The Redis nodes behind one kind of Redis system: a single server
    (`cluster` False) or a cluster's nodes."""

    def __init__(self, kind, ports, pids, url, cluster, command):
        self.kind = kind            # "redis" or "cluster"
        self.ports = list(ports)
        self.pids = dict(zip(ports, pids))
        self.url = url              # what pgstash's --redis gets
        self.cluster = cluster
        self.command = command      # one node's command line, for the report

    def roles(self):
        """{port: "master" / "replica" / "single"} as the nodes see it now."""
        if not self.cluster:
            return {p: "single" for p in self.ports}
        out = {}
        for line in call(self.ports[0], "CLUSTER", "NODES").splitlines():
            f = line.split()
            if len(f) < 3:
                continue
            port = int(f[1].split("@")[0].rsplit(":", 1)[1])
            out[port] = "master" if "master" in f[2] else "replica"
        return out

    def masters(self):
        return [p for p, r in sorted(self.roles().items()) if r in ("master", "single")]

    def slots(self):
        """{master port: number of slots it serves}."""
        if not self.cluster:
            return {self.ports[0]: None}
        out = {}
        for start, end, master, *_ in call(self.ports[0], "CLUSTER", "SLOTS"):
            port = int(master[1])
            out[port] = out.get(port, 0) + int(end) - int(start) + 1
        return out

    def node_of(self, key):
        """The master serving `key`."""
        if not self.cluster:
            return self.ports[0]
        slot = int(call(self.ports[0], "CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in call(self.ports[0], "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
        return None

    def snapshot(self):
        """{port: {"role", "cmd": commandstats, "cpu_s": user + sys}}."""
        roles = self.roles()
        out = {}
        for p in self.ports:
            raw = info(p, "commandstats", "cpu")
            out[p] = {"role": roles.get(p, "?"), "cmd": commandstats(raw),
                      "cpu_s": float(raw.get("used_cpu_user", 0))
                      + float(raw.get("used_cpu_sys", 0))}
        return out

    def keys(self, prefixes):
        """After the runs: each master's DBSIZE, slots, and keys by kind for
        each pgstash key prefix (SCAN with patterns; counts, not names):
        entries, fill leases, meta keys (epochs and table versions) and
        groups (distinct hash tags holding keys here; an epoch key exists only
        once an epoch was set, a version key once its table was written).
        Both store layouts are counted: groups `{prefix}` and `{prefix#n}`
        holding `e:`, `f:`, `epoch`, `v:` keys (since 2b342d0), and before
        it entries `prefix e:{hex}` beside one meta tag `{prefix}`."""
        out = {}
        slots = self.slots()
        for p in self.masters():
            c = Resp(p, timeout=60)
            try:
                row = {"dbsize": c.call("DBSIZE"), "slots": slots.get(p), "prefixes": {}}
                for prefix in prefixes:
                    counts = {kind: sum(_scan_count(c, pattern) for pattern in patterns)
                              for kind, patterns in key_patterns(prefix).items()}
                    counts["groups"] = len(_tags(c, prefix))
                    row["prefixes"][prefix] = counts
            finally:
                c.close()
            out[p] = row
        return out


def key_patterns(prefix):
    """{kind: [SCAN patterns]} of one prefix's keys, the patterns disjoint."""
    one, many = _glob("{" + prefix + "}"), _glob("{" + prefix + "#") + "*" + _glob("}")
    return {"entries": [one + "e:*", many + "e:*", _glob(prefix + "e:") + "*"],
            "leases": [one + "f:*", many + "f:*", _glob(prefix + "f:") + "*"],
            "meta": [one + "epoch", many + "epoch", one + "v:*", many + "v:*"]}


def _glob(literal):
    """`literal` as a SCAN MATCH pattern that matches only itself."""
    return "".join("\\" + ch if ch in "*?[]\\{}" else ch for ch in literal)


def _tags(conn, prefix):
    """The group tags of `prefix` (`{prefix}`, `{prefix#n}`) with a key on
    this node."""
    tags, cursor = set(), "0"
    while True:
        cursor, keys = conn.call("SCAN", cursor, "MATCH", _glob("{" + prefix) + "*",
                                 "COUNT", 1000)
        for k in keys:
            tag = k[:k.find("}") + 1]
            if tag == "{" + prefix + "}" or tag.startswith("{" + prefix + "#"):
                tags.add(tag)
        if cursor == "0":
            return tags


def _scan_count(conn, pattern):
    cursor, n = "0", 0
    while True:
        cursor, keys = conn.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        n += len(keys)
        if cursor == "0":
            return n


def delta(before, after):
    """Per node: commands run between two snapshots (calls, usec, failed;
    only commands that ran), and CPU seconds."""
    out = {}
    for p, a in after.items():
        b = before.get(p) or {"cmd": {}, "cpu_s": 0.0}
        cmds = {}
        for name, c in a["cmd"].items():
            o = b["cmd"].get(name, {"calls": 0, "usec": 0, "failed": 0})
            d = {k: c[k] - o[k] for k in ("calls", "usec", "failed")}
            if d["calls"] or d["failed"]:
                cmds[name] = d
        out[str(p)] = {"role": a["role"], "cmd": cmds,
                       "cpu_us": round((a["cpu_s"] - b["cpu_s"]) * 1e6)}
    return out


# ---------------------------------------------------------------- cluster

def start_cluster(sup, tmp, ports, bus_ports, masters, replicas, log):
    """`masters` masters and `replicas` replicas each, on `ports` (masters *
    (1 + replicas) of them; each node's cluster bus on the matching one of
    `bus_ports`, not Redis's default of port + 10000, which may be taken or
    beyond 65535), joined with redis-cli --cluster create (which wants 3
    masters or more); one master alone gets every slot with CLUSTER
    ADDSLOTSRANGE (the cluster protocol, every group on one process).
    Waits until every node reports cluster_state:ok and every replica's
    link to its master is up."""
    base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "yes", "--maxmemory", "512mb",
            "--maxmemory-policy", "allkeys-lru", "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # A node learns its own address from the others; one alone would
            # name itself with an empty host in CLUSTER SLOTS.
            "--cluster-announce-ip", "127.0.0.1"]
    pids = []
    for port, bus in zip(ports, bus_ports):
        d = f"{tmp}/redis-cluster/{port}"
        os.makedirs(d, exist_ok=True)
        p = sup.spawn(f"redis-cluster-{port}",
                      ["redis-server", "--port", str(port), "--cluster-port", str(bus),
                       "--dir", d] + base,
                      f"{d}/redis.log")
        if not procs.wait_port(port, 20, p):
            raise RuntimeError(f"cluster node {port} did not start; see {d}/redis.log")
        pids.append(p.pid)
    if masters == 1:
        call(ports[0], "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    else:
        procs.run(["redis-cli", "--cluster", "create"] + [f"127.0.0.1:{p}" for p in ports]
                  + ["--cluster-replicas", str(replicas), "--cluster-yes"], timeout=120)
    deadline = time.monotonic() + 60
    while True:
        ok = True
        for p in ports:
            ci = call(p, "CLUSTER", "INFO")
            rep = info(p, "replication")
            if ("cluster_state:ok" not in ci or "cluster_slots_assigned:16384" not in ci
                    or not (rep.get("role") == "master"
                            or rep.get("master_link_status") == "up")):
                ok = False
                break
        if ok:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the Redis Cluster did not become healthy in 60 s")
        time.sleep(0.2)
    first, rest = ports[0], ports[1:]
    url = f"redis-cluster://127.0.0.1:{first}" + (
        "?" + "&".join(f"node=127.0.0.1:{p}" for p in rest) if rest else "")
    nodes = Nodes("cluster", ports, pids, url, True,
                  "redis-server --port PORT --cluster-port BUS_PORT --dir DIR " + " ".join(
                      a if a else '""' for a in base))
    log(f"redis cluster: {len(nodes.masters())} masters, {len(ports) - masters} replicas on "
        f"{','.join(map(str, ports))}")
    return nodes


def single(port, pid, command):
    return Nodes("redis", [port], [pid], f"redis://127.0.0.1:{port}", False, command)
