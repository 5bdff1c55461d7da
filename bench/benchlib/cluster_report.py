"""The report's Redis Cluster section (issue #18): pgstash on a local Redis
Cluster against the same configuration on the single Redis, the Redis
commands and CPU each node spent per transaction (from the per-run
INFO deltas of cluster.py), where the keys and commands landed, what one
call of each script costs a node (redis_scripts.py), and the capacity
those per-call costs give N masters."""

PAIRS = (("pgstash_cluster", "pgstash_redis"), ("pgstash_cluster_always", "pgstash_always"))
REDIS_SYSTEMS = ("pgstash_redis", "pgstash_cluster", "pgstash_always",
                 "pgstash_cluster_always")
# Commands bench/run itself sends to the nodes around each run.
OURS = {"info", "cluster|nodes", "cluster|slots", "cluster|keyslot", "dbsize", "scan",
        "config|resetstat"}
INNER = ("get", "mget", "pttl", "set", "del", "incr", "publish")
MODEL_N = (1, 3, 6, 12, 24)


def _fmt(x, digits=2):
    return "–" if x is None else f"{x:,.{digits}f}"


def _ratio(a, b):
    return None if a is None or not b else a / b


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


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
    of op="lookup": both scripts on Cluster), or None."""
    c = agg["pgstash"]
    n = c.get('pgstash_store_call_seconds_count{op="lookup"}')
    return _ratio(1e6 * c.get('pgstash_store_call_seconds_sum{op="lookup"}', 0), n)


def _calls(node, name):
    return node["cmd"].get(name, {}).get("calls", 0)


def _masters(agg):
    return {p: n for p, n in agg["nodes"].items() if n["role"] != "replica"}


def _replicas(agg):
    return {p: n for p, n in agg["nodes"].items() if n["role"] == "replica"}


def node_labels(topo):
    """{port: "M1 7001 (meta pgstash:)"}: masters M1…, replicas R1…, by
    port; a node serving the meta keys of a prefix says which."""
    roles = topo.get("roles") or {}
    metas = {}
    for prefix, port in sorted((topo.get("meta_node") or {}).items()):
        metas.setdefault(str(port), []).append(prefix)
    out, m, r = {}, 0, 0
    for port in sorted(roles, key=int):
        if roles[port] == "replica":
            r += 1
            out[port] = f"R{r} {port}"
        else:
            m += 1
            out[port] = f"M{m} {port}" + (f" (meta {', '.join(metas[port])})"
                                          if port in metas else "")
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
    meta = topo.get("meta_node") or {}
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
           "cluster under its own prefix. A lookup on one Redis is one EVALSHA (epoch, "
           "versions and entry in one script); on Cluster two EVALSHAs sent together, the "
           "meta script on the node of the `{prefix}` slot and the entry script on the "
           "entry's node. Meta keys: " + ", ".join(
               f"`{pr}` on {port}" for pr, port in sorted(meta.items())) + ".", "",
           "**One host cannot show scale-out**: the cluster's nodes, pgstash, pgbench and "
           "Postgres share this machine's cores, so the cluster can only cost here (two "
           "calls per lookup instead of one); what it would give on separate hosts is the "
           "model at the end, from the per-node figures below.", ""]
    out += _versus(result, summary)
    out += _per_event(result, topo_all)
    out += _per_node(result, topo_all)
    out += _keys(topo)
    out += _script_costs(result)
    out += _model(result, topo)
    return out


def _versus(result, summary):
    per_round = {}
    for r in result["runs"]:
        per_round.setdefault((r["workload"], r["system"]), {})[r["round"]] = r
    rows = []
    for w in result["workloads"]:
        lat = w["metric"] == "latency"
        key = "p50_ms" if lat else "tps"
        cells = summary.get(w["name"], {})
        for a, b in PAIRS:
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
            rows.append([f"`{w['name']}`", "p50" if lat else "tps",
                         f"{v(cb)}", f"{v(ca)}",
                         f"**{_fmt(_ratio(ca[key], cb[key]))}×**",
                         ", ".join(_fmt(x) for x in rounds if x is not None) or "–",
                         f"{hr(cb)} / {hr(ca)}",
                         "–" if lat else f"{cpu(cb)} / {cpu(ca)}",
                         " / ".join(_fmt(x, 0) for x in waits)])
    header = ["workload", "metric", "single Redis", "Cluster", "Cluster / single",
              "per round", "hits single / Cluster", "pgstash CPU µs/tx single / Cluster",
              "lookup wait µs single / Cluster"]
    return (["### Cluster against one Redis", "",
             "`pgstash_cluster` / `pgstash_redis` and `pgstash_cluster_always` / "
             "`pgstash_always` (rows in that order per workload), medians over rounds; "
             "for throughput higher is better, for p50 lower is better. *lookup wait*: the "
             "mean time pgstash waited on one lookup (`pgstash_store_call_seconds`, "
             "op=\"lookup\", all rounds; on Cluster the two scripts sent together).", ""]
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


def event_counts(agg, meta_port, cluster):
    """The calls of one (workload, system) split by purpose. Invalidations
    are the INCRs (one table per write here: one INCR per script call);
    everything else on the masters is the lookup path: lookup scripts
    (one per lookup on one Redis, meta + entry on Cluster), puts of fills,
    lease releases of skipped fills, and on Cluster a lease call per
    stale entry (the residual)."""
    m = _masters(agg)
    ev = sum(_calls(n, "evalsha") for n in m.values())
    incr = sum(_calls(n, "incr") for n in m.values())
    c = agg["pgstash"]
    lookups = agg["hits"] + agg["misses"]
    fills = c.get("pgstash_cache_fills_total", 0)
    skipped = c.get("pgstash_cache_fills_skipped_total", 0)
    path = ev - incr
    design = (2 if cluster else 1) * lookups + fills + skipped
    split = cluster and len(m) > 1 and meta_port in m
    meta_ev = _calls(m[meta_port], "evalsha") - incr if split else None
    return {"lookups": lookups, "hits": agg["hits"], "misses": agg["misses"],
            "fills": fills, "skipped": skipped,
            "writes": c.get("pgstash_invalidations_total", 0), "incr": incr,
            "path": path, "design": design, "residual": path - design,
            "meta_path": meta_ev, "entry_path": None if meta_ev is None else path - meta_ev}


def _per_event(result, topo_all):
    rows = []
    for event, w, one, cl, how in EVENTS:
        for s, kind in ((one, "redis"), (cl, "cluster")):
            topo = topo_all.get(kind) or {}
            a = aggregate(result, w, s)
            if not a["tx"]:
                continue
            meta = str((topo.get("meta_node") or {}).get(
                "pgstash_always:" if "always" in s else "pgstash:"))
            e = event_counts(a, meta, kind == "cluster")
            lk, wr = e["lookups"], e["writes"]
            if event == "write":
                per = (f"**{_fmt(_ratio(e['incr'], wr))}** INCR script per write "
                       f"({wr:,.0f} writes)")
                split = "all on the meta node" if kind == "cluster" else "–"
            else:
                per = f"**{_fmt(_ratio(e['path'], lk))}** per lookup"
                if kind != "cluster":
                    split = "–"
                elif e["meta_path"] is None:
                    split = "one node: both scripts"
                else:
                    split = (f"{_ratio(e['meta_path'], lk):.2f} meta node / "
                             f"{_ratio(e['entry_path'], lk):.2f} entry nodes")
            rows.append([event, f"`{w}` ({how})", s, f"{lk:,.0f}",
                         f"{_ratio(e['hits'], lk) * 100:.0f}%" if lk else "–",
                         f"{e['fills']:,.0f} / {e['skipped']:,.0f}", per, split,
                         f"{e['design']:,.0f}", f"{e['path']:,.0f}",
                         f"{e['residual']:+,.0f} ({_fmt(_ratio(e['residual'], lk))}/lookup)"
                         if lk else "–"])
    return (["### Calls per hit, miss and write", "",
             "EVALSHA calls on the masters (commandstats deltas of the measured runs, all "
             "rounds) set against what pgstash counted in the same runs (lookups = hits + "
             "misses, fills written / skipped as dead, writes = `pgstash_invalidations_total`). "
             "*By design*: per lookup 1 script on one Redis, 2 on Cluster (meta + entry), "
             "plus 1 put per fill written and 1 lease release per fill skipped; an "
             "invalidation is one INCR script per batch of writes. The *residual* is what "
             "the design does not account for: on Cluster, the lease call of an entry "
             "found stale (on one Redis the lookup script takes that lease itself).", ""]
            + _table(["event", "workload", "system", "lookups", "hits", "fills / skipped",
                      "EVALSHA measured", "split (Cluster)", "lookup-path EVALSHA by design",
                      "measured", "residual"], rows) + [""])


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
        systems = [s for s in REDIS_SYSTEMS if s in (topo.get("systems") or [])]
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
                failed = sum(v["failed"] for n in a["nodes"].values()
                             for v in n["cmd"].values())
                cells = []
                for p in ports:
                    n = a["nodes"].get(p)
                    cells.append("–" if n is None else
                                 f"{_calls(n, 'evalsha') / tx:.2f} · {n['cpu_us'] / tx:.1f}")
                rows.append([f"`{w['name']}`", s, f"{tx:,}",
                             f"{lookups / tx:.2f}", _fmt(_ratio(ev, lookups))] + cells + [
                    ", ".join(f"{c} {v / tx:.2f}" for c, v in inner.items() if v) or "–",
                    ", ".join(f"{c} {v}" for c, v in sorted(other.items())) or "–"]
                    + ([", ".join(f"{c} {v / tx:.2f}" for c, v in sorted(replayed.items()))
                        or "–"] if kind == "cluster" else []) + [failed])
        header = (["workload", "system", "transactions", "lookups/tx", "EVALSHA/lookup"]
                  + [labels[p] for p in ports]
                  + ["inside scripts per tx (masters)", "other commands (total)"]
                  + (["replayed on replicas per tx"] if kind == "cluster" else [])
                  + ["failed calls"])
        out += [f"**{'Redis Cluster' if kind == 'cluster' else 'Single Redis'}**", ""]
        out += _table(header, rows) + [""]
    return out


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
                         f"{v['leases']} / {v['meta']}")
        rows.append([labels.get(port, port), "–" if k is None else k["slots"],
                     "–" if k is None else f"{k['dbsize']:,}"] + cells + [
            f"{calls:,} ({_fmt(ev_share and ev_share * 100, 0)}%)",
            _fmt(_ratio(ev.get("usec"), ev.get("calls")), 1),
            f"{stats[port]['cpu_s']:.1f}"])
    return (["### Keys and commands on each node after the runs", "",
             "Keys by kind on each master (`SCAN MATCH`, after the workloads): cache entries "
             "(`prefix e:{…}`, share of the prefix's entries) / fill leases (`prefix f:{…}`) / "
             "meta keys (`{prefix}…`: epoch, table versions). EVALSHA calls since the node "
             "started (warm-ups, the read-your-writes check not yet) and their share, "
             "server-side µs per EVALSHA (`usec_per_call`: the script's execution, "
             "without I/O), and the node's CPU seconds since it started.", ""]
            + _table(["node", "slots", "DBSIZE"]
                     + [f"`{pr}` entries / leases / meta" for pr in prefixes]
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
             "EVALSHA of the store's own scripts (read from `scripts.rs`), keys of a hit on "
             "a point select (an entry of ~100 bytes framed with its stamp); at 1 client "
             "(latency) and 32 clients (a busy node; the client runs on the other core), "
             "each 3 times interleaved, medians. *Node CPU per call*: the redis-server's "
             "own user + system CPU (`INFO cpu`) over the calls, whichever side was the "
             "bottleneck. "
             f"The lookup script found its entry: {sc.get('lookup_hit_checked')}.", ""]
            + _table(["call", "what", "p50 ms, 1 client", "calls/s, 1 client",
                      "node CPU µs per call, 1 client", "calls/s, 32 clients",
                      "node CPU µs per call, 32 clients"], rows) + [""])


def costs(result, topo):
    """Per-call node CPU (µs) measured in the hit runs: the single Redis's
    lookup script, the cluster's meta script (on the meta node) and entry
    script (on the other masters) — from select_8c, else the first
    workload where both ran with hits only. -> dict or None."""
    meta = str((topo.get("meta_node") or {}).get("pgstash:"))
    for w in ("select_8c", "select_32c", "hot_zipf"):
        one = aggregate(result, w, "pgstash_redis")
        cl = aggregate(result, w, "pgstash_cluster")
        if not one["tx"] or not cl["tx"] or meta not in cl["nodes"]:
            continue
        single = next(iter(one["nodes"].values()))
        c_single = _ratio(single["cpu_us"], _calls(single, "evalsha"))
        others = [n for p, n in cl["nodes"].items() if p != meta and n["role"] == "master"]
        e_calls = sum(_calls(n, "evalsha") for n in others)
        e = _ratio(sum(n["cpu_us"] for n in others), e_calls)
        m_node = cl["nodes"][meta]
        m_calls = _calls(m_node, "mget")           # one MGET per meta script
        m_entry = _calls(m_node, "evalsha") - m_calls
        m = _ratio(m_node["cpu_us"] - m_entry * (e or 0), m_calls)
        return {"workload": w, "single": c_single, "meta": m, "entry": e}
    return None


def _model(result, topo):
    c = costs(result, topo)
    sc = {t["name"]: t for t in (result.get("redis_scripts") or {}).get("tests", [])}

    def bench_cost(name):
        return ((sc.get(name) or {}).get("c32") or {}).get("cpu_us_per_call")
    sources = []
    if c and c["single"] and c["meta"] and c["entry"]:
        sources.append((f"node CPU per call measured in `{c['workload']}` (part load)",
                        c["single"], c["meta"], c["entry"]))
    b = (bench_cost("lookup_hit"), bench_cost("meta"), bench_cost("entry_hit"))
    if all(b):
        sources.append(("node CPU per call under redis-benchmark, 32 clients (a busy "
                        "node)",) + b)
    if not sources:
        return []
    rows = []
    for what, single, m, e in sources:
        rows.append([what, f"{single:.1f} / {m:.1f} / {e:.1f}",
                     f"{1e6 / single:,.0f}"]
                    + [f"{1e6 / (m + e / n):,.0f}" for n in MODEL_N]
                    + [f"{1e6 / m:,.0f}"])
    return (["### Capacity model", "",
             "Hits per second the Redis side can serve (every node one core), from the "
             "cost of one call: *single Redis* one lookup script per hit, at most 1 / c(lookup). "
             "*Cluster of N masters*: per hit one meta script, always on the node of the "
             "`{prefix}` slot, and one entry script on the entry's node (1/N of them on "
             "each master); the meta node carries c(meta) + c(entry)/N per hit and is the "
             "first to fill, so N masters serve at most 1 / (c(meta) + c(entry)/N) hits/s, "
             "and never more than 1 / c(meta) however many masters there are. Misses add "
             "an entry-node put (and, for a stale entry, a lease call); writes one meta-"
             "node call per invalidation batch. pgstash instances are not the limit here: "
             "they share nothing but Redis and scale by adding them.", ""]
            + _table(["per-call cost from", "c(lookup) / c(meta) / c(entry) µs",
                      "single Redis hits/s"] + [f"Cluster N={n}" for n in MODEL_N]
                     + ["Cluster, N → ∞"], rows) + [""])
