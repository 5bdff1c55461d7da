"""The report's Redis Cluster section (issue #18): pgstash on a local Redis
Cluster against the same configuration on the single Redis, the Redis
commands and CPU each node spent per transaction (from the per-run
INFO deltas of cluster.py), the calls per hit, miss and write set against
the store's design, where the keys, groups and commands landed, what one
call of each script costs a node (redis_scripts.py), and the capacity
those per-call costs give N masters.

The design (proxy/src/cache/store/redis/layout.rs, since 2b342d0): the
store's keys live in groups (one hash tag each; 1 on one Redis, GROUPS on
a Cluster, their slots evenly spaced), each holding its own epoch and table
versions beside its entries and fill leases. A lookup is one script on the
node of the entry's group; a fill one put there; a write one `invalidate`
script per master (over every group that master serves)."""

from . import baseline

PAIRS = (("pgstash_cluster", "pgstash_redis"), ("pgstash_cluster_always", "pgstash_always"))
REDIS_SYSTEMS = ("pgstash_redis", "pgstash_cluster", "pgstash_always",
                 "pgstash_cluster_always")
# Commands bench/run itself sends to the nodes around each run.
OURS = {"info", "cluster|nodes", "cluster|slots", "cluster|keyslot", "dbsize", "scan",
        "config|resetstat"}
INNER = ("get", "mget", "pttl", "set", "del", "incr", "publish")
GROUPS = 16          # layout.rs CLUSTER_GROUPS
MODEL_N = (1, 3, 6, 12, 16, 24)


def _fmt(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


def _ratio(a, b):
    return None if a is None or not b else a / b


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _pairs(present):
    """PAIRS, then their baseline twins when the run has them."""
    out = list(PAIRS)
    out += [(baseline.twin(a), baseline.twin(b)) for a, b in PAIRS
            if baseline.twin(a) in present]
    return out


def aggregate(result, workload, system):
    """Sums over the rounds of one (workload, system): transactions, hits,
    misses, and per node the commands and CPU µs of the measured runs."""
    out = {"tx": 0, "hits": 0, "misses": 0, "rounds": 0, "nodes": {}, "pgstash": {}}
    for r in result["runs"]:
        if r["workload"] != workload or r["system"] != system or not r.get("redis_nodes"):
            continue
        out["rounds"] += 1
        out["tx"] += r.get("transactions") or 0
        out["hits"] += r.get("hits") or 0
        out["misses"] += r.get("misses") or 0
        for k, v in (r.get("pgstash_counters") or {}).items():
            out["pgstash"][k] = out["pgstash"].get(k, 0) + v
        for port, n in r["redis_nodes"].items():
            node = out["nodes"].setdefault(port, {"role": n["role"], "cmd": {}, "cpu_us": 0})
            node["cpu_us"] += n["cpu_us"]
            for name, c in n["cmd"].items():
                if name in OURS:
                    continue
                acc = node["cmd"].setdefault(name, {"calls": 0, "usec": 0, "failed": 0})
                for k in acc:
                    acc[k] += c[k]
    return out


def store_wait(agg):
    """Mean µs pgstash waited on one lookup call (`pgstash_store_call_seconds`
    of op="lookup"), or None."""
    c = agg["pgstash"]
    n = c.get('pgstash_store_call_seconds_count{op="lookup"}')
    return _ratio(1e6 * c.get('pgstash_store_call_seconds_sum{op="lookup"}', 0), n)


def _calls(node, name):
    return node["cmd"].get(name, {}).get("calls", 0)


def _masters(agg):
    return {p: n for p, n in agg["nodes"].items() if n["role"] != "replica"}


def _replicas(agg):
    return {p: n for p, n in agg["nodes"].items() if n["role"] == "replica"}


def groups_per_master(topo, prefix):
    """{port: groups of `prefix` on that master} (epoch keys found by SCAN
    after the runs), or {}."""
    keys = topo.get("keys") or {}
    return {p: (k["prefixes"].get(prefix) or {}).get("groups", 0) for p, k in keys.items()}


def prefix_of(system):
    """The key prefix bench/run gives a Redis system (twins: their own)."""
    prefix = "pgstash_always:" if "always" in baseline.original(system) else "pgstash:"
    return baseline.twin_prefix(prefix) if baseline.is_twin(system) else prefix


def node_labels(topo):
    """{port: "M1 7001 (groups: pgstash: 5, …)"}: masters M1…, replicas R1…,
    by port; a master says how many groups of each prefix it serves."""
    roles = topo.get("roles") or {}
    keys = topo.get("keys") or {}
    out, m, r = {}, 0, 0
    for port in sorted(roles, key=int):
        if roles[port] == "replica":
            r += 1
            out[port] = f"R{r} {port}"
            continue
        m += 1
        groups = {pr: v["groups"] for pr, v in
                  ((keys.get(port) or {}).get("prefixes") or {}).items()
                  if v.get("groups") is not None}
        out[port] = f"M{m} {port}" + (" (groups: " + ", ".join(
            f"{pr} {n}" for pr, n in sorted(groups.items())) + ")" if groups else "")
    return out


def section(result):
    topo_all = result.get("redis_topology") or {}
    summary = result["summary"]
    present = {s for w in summary.values() for s in w}
    if not any(a in present for a, _ in PAIRS):
        return []
    topo = topo_all.get("cluster") or {}
    reps = result["params"].get("cluster_replicas")
    masters = result["params"].get("cluster_masters", 3)
    spread = groups_per_master(topo, "pgstash:")
    out = ["## Redis Cluster", "",
           "`pgstash_cluster` is `pgstash_redis` (strict mode, same rules) with `--redis "
           f"redis-cluster://…` naming every node of a local Redis Cluster of {masters} "
           f"master(s) with {reps} replica(s) each that the run starts on loopback "
           "(`redis-server --cluster-enabled yes`, "
           + ("`redis-cli --cluster create`" if masters > 1 else
              "every slot on the one node with `CLUSTER ADDSLOTSRANGE`")
           + ", healthy when every node reports `cluster_state:ok` and every replica "
           "`master_link_status:up`); "
           "`pgstash_cluster_always` is `pgstash_always` (adaptive = false) on the same "
           "cluster under its own prefix. The store's keys live in groups (one hash tag "
           f"each: 1 on one Redis, {GROUPS} on a Cluster, `{{prefix}}` and `{{prefix#n}}` "
           "with evenly spaced slots), each holding its own epoch and table versions beside "
           "its entries and fill leases. A lookup is one EVALSHA, on one Redis as on the "
           "node of the entry's group; a write runs one invalidate script per master. "
           "Groups of `pgstash:` per master: " + (", ".join(
               f"{port} {n}" for port, n in sorted(spread.items())) or "–") + ".", "",
           "**One host cannot show scale-out**: the cluster's nodes, pgstash, pgbench and "
           "Postgres share this machine's cores; what N masters would give on separate "
           "hosts is the model at the end, from the per-node figures below.", ""]
    out += _versus(result, summary, present)
    out += _per_event(result, topo_all)
    out += _per_node(result, topo_all)
    out += _keys(topo)
    out += _script_costs(result)
    out += _model(result, topo)
    return out


def _versus(result, summary, present):
    per_round = {}
    for r in result["runs"]:
        per_round.setdefault((r["workload"], r["system"]), {})[r["round"]] = r
    rows = []
    for w in result["workloads"]:
        lat = w["metric"] == "latency"
        key = "p50_ms" if lat else "tps"
        cells = summary.get(w["name"], {})
        for a, b in _pairs(present):
            ca, cb = cells.get(a), cells.get(b)
            if not ca or not cb:
                continue
            ra, rb = per_round.get((w["name"], a), {}), per_round.get((w["name"], b), {})
            rounds = [_ratio(ra[k].get(key), rb[k].get(key)) for k in sorted(ra) if k in rb]

            def hr(c):
                h = c.get("hit_ratio")
                return "–" if h is None else f"{h * 100:.0f}%"

            def cpu(c):
                u, s = c.get("cpu_user_us"), c.get("cpu_sys_us")
                return "–" if u is None else f"{u + s:.1f}"
            v = (lambda c: f"{c[key]:.3f} ms") if lat else (lambda c: f"{c[key]:,.0f}")
            waits = [store_wait(aggregate(result, w["name"], x)) for x in (b, a)]
            rows.append([f"`{w['name']}`", f"{a} / {b}", "p50" if lat else "tps",
                         f"{v(cb)}", f"{v(ca)}",
                         f"**{_fmt(_ratio(ca[key], cb[key]))}×**",
                         ", ".join(_fmt(x) for x in rounds if x is not None) or "–",
                         f"{hr(cb)} / {hr(ca)}",
                         "–" if lat else f"{cpu(cb)} / {cpu(ca)}",
                         " / ".join(_fmt(x, 0) for x in waits)])
    header = ["workload", "pair", "metric", "single Redis", "Cluster", "Cluster / single",
              "per round", "hits single / Cluster", "pgstash CPU µs/tx single / Cluster",
              "lookup wait µs single / Cluster"]
    return (["### Cluster against one Redis", "",
             "Each Cluster system against its single-Redis twin (`@base`: the baseline "
             "binary, when the run has one), medians over rounds; for throughput higher is "
             "better, for p50 lower is better. *lookup wait*: the mean time pgstash waited "
             "on one lookup (`pgstash_store_call_seconds`, op=\"lookup\", all rounds).", ""]
            + _table(header, rows) + [""])


# (event, workload, system on one Redis, system on Cluster, what isolates it)
EVENTS = (("hit", "select_8c", "pgstash_redis", "pgstash_cluster",
           "every read a hit"),
          ("hit, 1 client", "select_1c_extended", "pgstash_redis", "pgstash_cluster",
           "every read a hit"),
          ("miss, no entry yet", "uniform_miss", "pgstash_always", "pgstash_cluster_always",
           "adaptive off: every read looked up, ~99% new keys"),
          ("miss, entry stale after a write", "mix_50_50", "pgstash_always",
           "pgstash_cluster_always", "adaptive off: reads of rows a write just invalidated"),
          ("write", "mix_50_50", "pgstash_redis", "pgstash_cluster",
           "adaptive on: reads mostly bypassed, so the calls are the writes'"))


def event_counts(agg, nodes_per_write):
    """The calls of one (workload, system) split by purpose. By design a
    lookup is one script, a fill written one put, a fill skipped as dead one
    lease release, and a batch of invalidations one script on each of the
    `nodes_per_write` masters serving a group (1 on one Redis). A batch is
    counted by its PUBLISHes: each of those scripts publishes one message
    for all its keys (since 6c817c8; before, binaries published once per
    version key, and so this count). The residual is what the design does
    not account for (epoch renewals would land there)."""
    m = _masters(agg)
    ev = sum(_calls(n, "evalsha") for n in m.values())
    incr = sum(_calls(n, "incr") for n in m.values())
    publish = sum(_calls(n, "publish") for n in m.values())
    c = agg["pgstash"]
    lookups = agg["hits"] + agg["misses"]
    fills = c.get("pgstash_cache_fills_total", 0)
    skipped = c.get("pgstash_cache_fills_skipped_total", 0)
    path = lookups + fills + skipped
    batches = publish / nodes_per_write
    design = path + batches * nodes_per_write
    return {"lookups": lookups, "hits": agg["hits"], "misses": agg["misses"],
            "fills": fills, "skipped": skipped,
            "writes": c.get("pgstash_invalidations_total", 0), "incr": incr,
            "publish": publish, "batches": batches, "evalsha": ev, "path": path,
            "design": design,
            "residual": ev - design, "invalidate_scripts": ev - path,
            "per_master": {p: {"evalsha": _calls(n, "evalsha"), "incr": _calls(n, "incr")}
                           for p, n in m.items()}}


def _per_event(result, topo_all):
    rows = []
    for event, w, one, cl, how in EVENTS:
        for s, kind in ((one, "redis"), (cl, "cluster")):
            topo = topo_all.get(kind) or {}
            a = aggregate(result, w, s)
            if not a["tx"]:
                continue
            labels = node_labels(topo)
            spread = groups_per_master(topo, prefix_of(s)) if kind == "cluster" else {}
            nodes = sum(1 for n in spread.values() if n) or 1
            e = event_counts(a, nodes)
            lk, wr = e["lookups"], e["writes"]
            pm = sorted(e["per_master"].items(), key=lambda kv: labels.get(kv[0], kv[0]))

            def name(p):
                return labels.get(p, p).split(" ")[0]
            if event == "write":
                per = (f"**{_fmt(_ratio(e['invalidate_scripts'], e['batches']))}** "
                       f"invalidate scripts per batch ({e['batches']:,.0f} batches for "
                       f"{wr:,.0f} writes), {_fmt(_ratio(e['incr'], e['batches']))} INCR "
                       "per batch")
                split = ("–" if kind != "cluster" else "INCR per batch: " + " · ".join(
                    f"{name(p)} {_fmt(_ratio(v['incr'], e['batches']))}" for p, v in pm))
            else:
                per = f"**{_fmt(_ratio(e['evalsha'], lk))}** per lookup"
                split = ("–" if kind != "cluster" else "per lookup: " + " · ".join(
                    f"{name(p)} {_fmt(_ratio(v['evalsha'], lk))}" for p, v in pm))
            rows.append([event, f"`{w}` ({how})", s, f"{lk:,.0f}",
                         f"{_ratio(e['hits'], lk) * 100:.0f}%" if lk else "–",
                         f"{e['fills']:,.0f} / {e['skipped']:,.0f}", per, split,
                         f"{e['design']:,.0f}", f"{e['evalsha']:,.0f}",
                         f"{e['residual']:+,.0f} ({_fmt(_ratio(e['residual'], lk))}/lookup)"
                         if lk else f"{e['residual']:+,.0f}"])
    return (["### Calls per hit, miss and write", "",
             "EVALSHA calls on the masters (commandstats deltas of the measured runs, all "
             "rounds) set against what pgstash counted in the same runs (lookups = hits + "
             "misses, fills written / skipped as dead, writes = `pgstash_invalidations_total`). "
             "*By design*: 1 lookup script per lookup (on one Redis and on Cluster alike), "
             "1 put per fill written, 1 lease release per fill skipped, and per batch of "
             "invalidations one invalidate script on every master serving a group "
             "(batches = PUBLISH calls ÷ masters serving a group: each invalidate script "
             "publishes one message for all its keys; binaries before 6c817c8 published one "
             "per version key, which this count misreads). *Invalidate scripts per batch* = "
             "(EVALSHA − lookups − fills − skipped) / batches. The *residual* is what the "
             "design does not account for.", ""]
            + _table(["event", "workload", "system", "lookups", "hits", "fills / skipped",
                      "EVALSHA measured", "split over masters (Cluster)",
                      "EVALSHA by design", "measured", "residual"], rows) + [""])


def _per_node(result, topo_all):
    out = ["### Redis commands and CPU per transaction, by node", "",
           "From `INFO commandstats` and `INFO cpu` of every node before and after each "
           "measured run (warm-up excluded), summed over the rounds and divided by the "
           "transactions pgbench completed. *EVALSHA/lookup*: all EVALSHAs over hits + "
           "misses (`pgstash_cache_*_total`; on `mix_50_50` the invalidation scripts "
           "count too). *inside scripts*: the commands the scripts ran on the masters, "
           "per transaction. *replayed on replicas*: what the masters' scripts wrote, "
           "as the replicas executed it (a script with more than one write arrives as "
           "MULTI … EXEC). Each node cell: EVALSHA per transaction · node CPU µs per "
           "transaction (user + system, `used_cpu_*`; includes the kernel's network work "
           "and idle wake-ups, so at part load it is above the cost at saturation). "
           "Commands the bench sends itself (INFO, CLUSTER NODES) are left out.", ""]
    for kind in ("redis", "cluster"):
        topo = topo_all.get(kind) or {}
        users = topo.get("systems") or []
        systems = [s for s in REDIS_SYSTEMS + tuple(baseline.twin(x) for x in REDIS_SYSTEMS)
                   if s in users]
        if not systems:
            continue
        labels = node_labels(topo) if kind == "cluster" else {
            p: f"single {p}" for p in (topo.get("roles") or {})}
        ports = sorted(labels, key=lambda p: (labels[p][0] == "R", labels[p]))
        rows = []
        for w in result["workloads"]:
            for s in systems:
                a = aggregate(result, w["name"], s)
                if not a["tx"]:
                    continue
                rows.append(_node_row(w["name"], s, a, ports, kind))
        header = (["workload", "system", "transactions", "lookups/tx", "EVALSHA/lookup"]
                  + [labels[p] for p in ports]
                  + ["inside scripts per tx (masters)", "other commands (total)"]
                  + (["replayed on replicas per tx"] if kind == "cluster" else [])
                  + ["failed calls"])
        out += [f"**{'Redis Cluster' if kind == 'cluster' else 'Single Redis'}**", ""]
        out += _table(header, rows) + [""]
    return out


def _node_row(workload, s, a, ports, kind):
    tx, lookups = a["tx"], a["hits"] + a["misses"]
    masters = _masters(a).values()
    ev = sum(_calls(n, "evalsha") for n in masters)
    inner = {c: sum(_calls(n, c) for n in masters) for c in INNER}
    other, replayed = {}, {}
    for n in masters:
        for c, v in n["cmd"].items():
            if c not in INNER and c != "evalsha":
                other[c] = other.get(c, 0) + v["calls"]
    for n in _replicas(a).values():
        for c, v in n["cmd"].items():
            if c not in ("replconf", "select", "ping"):
                replayed[c] = replayed.get(c, 0) + v["calls"]
    failed = sum(v["failed"] for n in a["nodes"].values() for v in n["cmd"].values())
    cells = []
    for p in ports:
        n = a["nodes"].get(p)
        cells.append("–" if n is None else
                     f"{_calls(n, 'evalsha') / tx:.2f} · {n['cpu_us'] / tx:.1f}")
    return ([f"`{workload}`", s, f"{tx:,}", f"{lookups / tx:.2f}", _fmt(_ratio(ev, lookups))]
            + cells + [
        ", ".join(f"{c} {v / tx:.2f}" for c, v in inner.items() if v) or "–",
        ", ".join(f"{c} {v}" for c, v in sorted(other.items())) or "–"]
        + ([", ".join(f"{c} {v / tx:.2f}" for c, v in sorted(replayed.items()))
            or "–"] if kind == "cluster" else []) + [failed])


def _keys(topo):
    keys = topo.get("keys") or {}
    if not keys:
        return []
    labels = node_labels(topo)
    prefixes = sorted({pr for k in keys.values() for pr in k["prefixes"]})
    totals = {pr: sum(k["prefixes"][pr]["entries"] for k in keys.values()) for pr in prefixes}
    stats = topo.get("commandstats") or {}
    ev_total = sum(v["cmd"].get("evalsha", {}).get("calls", 0) for v in stats.values())
    rows = []
    for port in sorted(stats, key=lambda p: (labels.get(p, "")[0:1] == "R", labels.get(p, p))):
        k = keys.get(port)
        ev = stats[port]["cmd"].get("evalsha", {})
        calls = ev.get("calls", 0)
        ev_share = _ratio(calls, ev_total)
        cells = []
        for pr in prefixes:
            if k is None:
                cells.append("–")
                continue
            v = k["prefixes"][pr]
            share = _ratio(v["entries"], totals[pr])
            cells.append(f"{v['entries']:,} ({_fmt(share and share * 100, 0)}%) / "
                         f"{v['leases']} / {v['meta']} / {v.get('groups', '–')}")
        rows.append([labels.get(port, port).split(" (")[0], "–" if k is None else k["slots"],
                     "–" if k is None else f"{k['dbsize']:,}"] + cells + [
            f"{calls:,} ({_fmt(ev_share and ev_share * 100, 0)}%)",
            _fmt(_ratio(ev.get("usec"), ev.get("calls")), 1),
            f"{stats[port]['cpu_s']:.1f}"])
    return (["### Keys and commands on each node after the runs", "",
             "Keys by kind on each master (`SCAN MATCH`, after the workloads): cache entries "
             "(`{prefix}e:…` and `{prefix#n}e:…`; before 2b342d0 `prefix e:{…}`; share of "
             "the prefix's entries) / fill leases (`…f:…`) / meta keys (epochs and table "
             "versions of the groups) / groups (distinct group tags holding a key here). "
             "EVALSHA calls since the node started (warm-ups and the read-your-writes "
             "check included) "
             "and their share, server-side µs per EVALSHA (`usec_per_call`: the script's "
             "execution, without I/O), and the node's CPU seconds since it started.", ""]
            + _table(["node", "slots", "DBSIZE"]
                     + [f"`{pr}` entries / leases / meta / groups" for pr in prefixes]
                     + ["EVALSHA calls (share)", "µs per EVALSHA inside Redis",
                        "CPU s"], rows) + [""])


def _script_costs(result):
    sc = result.get("redis_scripts") or {}
    if not sc.get("tests"):
        return [f"Script costs not measured: {sc.get('error')}", ""] if sc else []
    rows = []
    for t in sc["tests"]:
        c1, c32 = t["c1"], t["c32"]
        rows.append([f"`{t['name']}`", t["what"], _fmt(c1.get("p50_ms"), 3),
                     _fmt(c1.get("rps"), 0), _fmt(c1.get("cpu_us_per_call"), 1),
                     _fmt(c32.get("rps"), 0), _fmt(c32.get("cpu_us_per_call"), 1)])
    return (["### What one call costs a Redis node here", "",
             "`redis-benchmark` against a throwaway redis-server (not a cluster node): "
             "EVALSHA of the store's own scripts (read from `scripts.rs`), keys of a point "
             "select in one group (an entry of ~100 bytes framed with its stamp); at 1 "
             "client (latency) and 32 clients (a busy node; the client runs on the other "
             "core), each 3 times interleaved, medians. *Node CPU per call*: the "
             "redis-server's own user + system CPU (`INFO cpu`) over the calls, whichever "
             "side was the bottleneck. Checked after the runs: "
             + ", ".join(f"{k} {v}" for k, v in (sc.get("checked") or {}).items()) + ".", ""]
            + _table(["call", "what", "p50 ms, 1 client", "calls/s, 1 client",
                      "node CPU µs per call, 1 client", "calls/s, 32 clients",
                      "node CPU µs per call, 32 clients"], rows) + [""])


def costs(result):
    """Node CPU (µs) per lookup script measured in a hits-only run: on the
    single Redis, and over the cluster's masters — from select_8c, else the
    first such workload both ran. -> dict or None."""
    for w in ("select_8c", "select_32c", "hot_zipf"):
        one = aggregate(result, w, "pgstash_redis")
        cl = aggregate(result, w, "pgstash_cluster")
        if not one["tx"] or not cl["tx"]:
            continue
        single = next(iter(one["nodes"].values()))
        m = _masters(cl).values()
        return {"workload": w, "single": _ratio(single["cpu_us"], _calls(single, "evalsha")),
                "cluster": _ratio(sum(n["cpu_us"] for n in m),
                                  sum(_calls(n, "evalsha") for n in m))}
    return None


def busiest_share(n):
    """The share of the hits on the busiest of `n` masters when the GROUPS
    groups (hits spread evenly over them) are split as evenly as can be."""
    return -(-GROUPS // min(n, GROUPS)) / GROUPS


def _model(result, topo):
    c = costs(result)
    sc = {t["name"]: t for t in (result.get("redis_scripts") or {}).get("tests", [])}

    def bench_cost(name):
        return ((sc.get(name) or {}).get("c32") or {}).get("cpu_us_per_call")
    sources = []
    if bench_cost("lookup_hit"):
        sources.append(("`redis-benchmark -c 32` (a busy node)", bench_cost("lookup_hit"),
                        bench_cost("lookup_hit")))
    if c and c["single"] and c["cluster"]:
        sources.append((f"node CPU per lookup in `{c['workload']}` (part load)",
                        c["single"], c["cluster"]))
    if not sources:
        return []
    spread = [n for n in groups_per_master(topo, "pgstash:").values() if n]
    here = max(spread) / sum(spread) if spread else None
    rows = []
    for what, single, cl in sources:
        rows.append([what, f"{single:.1f} / {cl:.1f}", f"{1e6 / single:,.0f}"]
                    + [f"{1e6 / (cl * busiest_share(n)):,.0f}" for n in MODEL_N]
                    + [f"{1e6 / (cl * here):,.0f} ({max(spread)} of {sum(spread)} groups "
                       "on the busiest)" if here else "–"])
    inv, many = bench_cost("invalidate"), bench_cost("invalidate_many")
    writes = []
    if inv and many:
        writes = [f"Writes: every write batch runs one invalidate script on every master "
                  f"(each over the groups it serves), so writes do not spread: with "
                  f"`redis-benchmark -c 32` costs, one Redis runs at most "
                  f"{1e6 / inv:,.0f} invalidations/s (c = {inv:.1f} µs) and every master "
                  f"of a Cluster at most {1e6 / many:,.0f}/s whatever N (c = {many:.1f} µs "
                  "for 6 groups); each write takes that from every master's hit capacity.",
                  ""]
    return (["### Capacity model", "",
             "Hits per second the Redis side can serve (every node one core), from the "
             "node CPU of one lookup script c: *one Redis* 1 / c. *Cluster of N masters*: "
             f"each hit is one script on the node of its entry's group; hits spread evenly "
             f"over the {GROUPS} groups, so the busiest master carries ⌈{GROUPS}/N⌉/{GROUPS} "
             "of them at best and N masters serve N / c hits/s while N divides "
             f"{GROUPS}, never more than {GROUPS} / c. The last column uses this run's "
             "actual split of the groups over the masters. Misses add one put on the same "
             "node. pgstash instances are not the limit here: they share nothing but Redis "
             "and scale by adding them.", ""]
            + _table(["per-call cost from", "c one Redis / c Cluster µs",
                      "one Redis hits/s"] + [f"Cluster N={n}" for n in MODEL_N]
                     + ["Cluster as started here"], rows) + [""] + writes)
