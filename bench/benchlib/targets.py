"""The speed targets of the issue, evaluated on one run's summary. Each is
reported as a PASS/FAIL line with the measured ratio; none ever fails the
script (a benchmark reports, it does not assert)."""


def _get(summary, workload, system, metric):
    """A system's figure, or None when every run of it failed (e.g.
    PgBouncer before 1.21 under -M prepared in transaction mode: its
    figure is the rate of its errors)."""
    entry = summary.get(workload, {}).get(system) or {}
    if entry.get("ok_runs") == 0:
        return None
    return entry.get(metric)


def _ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def evaluate(summary, extras):
    """-> list of dicts: name, ratio, op, threshold, status, basis (and
    `shown` where the value is shown otherwise than as a plain ratio). A
    figure the issue asks to report without a threshold is an INFO line
    (op "", threshold None)."""
    out = []

    def add(name, ratio, op, threshold, basis, shown=None):
        if ratio is None:
            status = "N/A"
        elif op == ">=":
            status = "PASS" if ratio >= threshold else "FAIL"
        else:
            status = "PASS" if ratio <= threshold else "FAIL"
        out.append({"name": name, "ratio": ratio, "op": op, "threshold": threshold,
                    "status": status, "basis": basis})
        if shown and ratio is not None:
            out[-1]["shown"] = shown

    def info(name, ratio, basis):
        out.append({"name": name, "ratio": ratio, "op": "", "threshold": None,
                    "status": "INFO" if ratio is not None else "N/A", "basis": basis})

    def tps(w, s):
        return _get(summary, w, s, "tps")

    def p50(w, s):
        return _get(summary, w, s, "p50_ms")

    for w in ("select_8c", "select_32c"):
        add(f"pass-through throughput ≥ 1.0× PgBouncer ({w})",
            _ratio(tps(w, "pgstash_pass"), tps(w, "pgbouncer")), ">=", 1.0,
            f"tps pgstash_pass / pgbouncer, {w}")
    for w in ("select_8c", "select_32c"):
        add(f"pass-through throughput ≥ 1.0× PgBouncer, --workers 1 ({w})",
            _ratio(tps(w, "pgstash_pass1"), tps(w, "pgbouncer")), ">=", 1.0,
            f"tps pgstash_pass1 / pgbouncer, {w}")
    for w in ("select_8c", "select_32c"):
        add(f"slow-query log of every query (--slow-query-ms 0) costs < 5% ({w})",
            _ratio(tps(w, "pgstash_log0"), tps(w, "pgstash_pass")), ">=", 0.95,
            f"tps pgstash_log0 / pgstash_pass, {w}")
    add("pass-through ≥ 0.8× direct at saturation (select_128c)",
        _ratio(tps("select_128c", "pgstash_pass"), tps("select_128c", "direct")), ">=", 0.8,
        "tps pgstash_pass / direct, 128 clients")
    for mode in ("simple", "extended", "prepared"):
        w = f"select_1c_{mode}"
        add(f"in-process hit latency at 1 client ≤ 0.5× direct (-M {mode})",
            _ratio(p50(w, "pgstash_mem"), p50(w, "direct")), "<=", 0.5,
            f"p50 pgstash_mem / direct, {w}")
    for w in ("hot_zipf", "heavy_join"):
        add(f"cached throughput ≥ 2× direct ({w})",
            _ratio(tps(w, "pgstash_mem"), tps(w, "direct")), ">=", 2.0,
            f"tps pgstash_mem / direct, {w}")
        add(f"cached throughput ≥ 1.5× pgpool-II query cache ({w})",
            _ratio(tps(w, "pgstash_mem"), tps(w, "pgpool")), ">=", 1.5,
            f"tps pgstash_mem / pgpool, {w}")
    rb = (extras.get("redis_benchmark") or {}).get("p50_ms")
    add("Redis-served hit latency ≤ 2× redis-benchmark GET (1 client)",
        _ratio(p50("select_1c_extended", "pgstash_redis"), rb), "<=", 2.0,
        "p50 pgstash_redis (select_1c_extended) / redis-benchmark GET p50")
    add("Redis-backed hit latency, fast mode ≤ 2× redis-benchmark GET (1 client)",
        _ratio(p50("select_1c_extended", "pgstash_fast"), rb), "<=", 2.0,
        "p50 pgstash_fast (select_1c_extended) / redis-benchmark GET p50")
    for s in ("pgstash_mem", "pgstash_redis", "pgstash_fast", "pgstash_always"):
        add(f"miss path ≥ 0.9× pass-through ({s}, uniform_miss)",
            _ratio(tps("uniform_miss", s), tps("uniform_miss", "pgstash_pass")), ">=", 0.9,
            f"tps {s} / pgstash_pass, uniform_miss")
    for s in ("pgstash_mem", "pgstash_redis", "pgstash_fast", "pgstash_always"):
        add(f"update-heavy mix ≥ 0.9× pass-through ({s}, mix_50_50)",
            _ratio(tps("mix_50_50", s), tps("mix_50_50", "pgstash_pass")), ">=", 0.9,
            f"tps {s} / pgstash_pass, mix_50_50")
    for s, off in (("pgstash_repl", "pgstash_mem"), ("pgstash_redis_repl", "pgstash_redis")):
        add(f"hot-set hit throughput with replication ≥ 0.95× without ({s}, hot_zipf)",
            _ratio(tps("hot_zipf", s), tps("hot_zipf", off)), ">=", 0.95,
            f"tps {s} / {off}, hot_zipf")
    # TLS on both sides (client → proxy and proxy → Postgres).
    for w in ("select_8c", "select_32c"):
        add(f"TLS pass-through throughput ≥ 1.0× PgBouncer with TLS ({w})",
            _ratio(tps(w, "pgstash_tls"), tps(w, "pgbouncer_tls")), ">=", 1.0,
            f"tps pgstash_tls / pgbouncer_tls, {w}")
    for w in ("select_8c", "select_32c"):
        kept_p = _ratio(tps(w, "pgstash_tls"), tps(w, "pgstash_pass"))
        kept_b = _ratio(tps(w, "pgbouncer_tls"), tps(w, "pgbouncer"))
        r = _ratio(kept_p, kept_b)
        add(f"TLS costs pgstash no larger a share of its throughput than PgBouncer ({w})",
            r, ">=", 1.0,
            f"(tps pgstash_tls / pgstash_pass) / (tps pgbouncer_tls / pgbouncer), {w}",
            shown=r and f"{r:.2f} (with TLS pgstash keeps {kept_p:.2f} of its plain "
            f"throughput, PgBouncer {kept_b:.2f})")
    for w in ("select_8c", "select_32c", "hot_zipf"):
        info(f"TLS hit throughput against PgBouncer with TLS ({w})",
             _ratio(tps(w, "pgstash_mem_tls"), tps(w, "pgbouncer_tls")),
             f"tps pgstash_mem_tls / pgbouncer_tls, {w}")
    out += _cluster(summary, extras, add, info)
    _parity(summary, extras, add)
    out += _direct_writes(extras)
    idle = (extras.get("idle") or {}).get("pgstash_pass") or {}
    kb = idle.get("kb_per_connection") if idle.get("opened") else None
    add("< 10 KB of proxy memory per idle client connection (pgstash)",
        kb, "<=", 10.0, "KiB of RSS per idle connection (absolute, not a ratio)")
    unauth = extras.get("unauth") or {}
    for who, op in (("pgstash", "<="), ("pgbouncer", None)):
        u = unauth.get(who) or {}
        kb = u.get("kb_per_connection") if u.get("opened") else None
        what = (f"{u.get('opened', 0):,} connections: {u.get('silent', 0):,} silent, "
                f"{u.get('in_scram', 0):,} inside a SCRAM exchange")
        basis = (f"KiB of RSS per unauthenticated connection (absolute), {what}; "
                 f"{u.get('closed_by_proxy', 0)} closed by the proxy, "
                 f"{u.get('failed', 0)} failed to open")
        if op:
            add("≤ 16 KiB of proxy memory per unauthenticated client connection (pgstash)",
                kb, op, 16.0, basis, shown=kb and f"{kb:.2f} KiB")
        elif u:
            info("proxy memory per unauthenticated client connection (PgBouncer)", kb, basis)
    viol = extras.get("rw_check") or {}
    total = sum(v.get("violations", 0) for k, v in viol.items() if k.startswith("pgstash"))
    out.append({"name": "read-your-writes: no stale read after an acknowledged update (pgstash)",
                "ratio": float(total), "op": "==", "threshold": 0.0,
                "status": ("PASS" if total == 0 else "FAIL") if viol else "N/A",
                "basis": "violations counted by workloads/rw_check.sql (absolute)"})
    return out


def _parity(summary, extras, add):
    """Issue #20: pass-through parity with PgBouncer per protocol, a cache
    that never costs (misses, writes), the Redis hit floor, the prepared
    protocol's share of the caching gain, memory per idle client."""
    def tps(w, s):
        return _get(summary, w, s, "tps")

    def p50(w, s):
        return _get(summary, w, s, "p50_ms")

    for c in (8, 32, 128):
        for m, w in (("simple", f"select_{c}c_simple"), ("extended", f"select_{c}c"),
                     ("prepared", f"select_{c}c_prepared")):
            add(f"#20 pass-through ≥ 1.0× PgBouncer, {c} clients, -M {m}",
                _ratio(tps(w, "pgstash_pass"), tps(w, "pgbouncer")), ">=", 1.0,
                f"tps pgstash_pass / pgbouncer, {w}")
    for s in ("pgstash_mem", "pgstash_redis", "pgstash_fast", "pgstash_always"):
        for w in ("uniform_miss", "mix_50_50"):
            add(f"#20 {w} ≥ 0.95× pass-through ({s})",
                _ratio(tps(w, s), tps(w, "pgstash_pass")), ">=", 0.95,
                f"tps {s} / pgstash_pass, {w}")
    rb = (extras.get("redis_benchmark") or {}).get("p50_ms")
    add("#20 strict-mode Redis hit p50 ≤ 1.3× redis-benchmark GET p50 (1 client)",
        _ratio(p50("select_1c_extended", "pgstash_redis"), rb), "<=", 1.3,
        "p50 pgstash_redis (select_1c_extended) / redis-benchmark GET p50")

    def gain(mode):
        # What caching saves a query at 1 client: pass-through p50 over the
        # in-process hit's, less one.
        w = f"select_1c_{mode}"
        speedup = _ratio(p50(w, "pgstash_pass"), p50(w, "pgstash_mem"))
        return None if speedup is None else speedup - 1

    gp, gs = gain("prepared"), gain("simple")
    add("#20 caching gain with -M prepared ≥ 80% of its gain with -M simple",
        _ratio(gp, gs), ">=", 0.8,
        "(p50 pgstash_pass / p50 pgstash_mem − 1), select_1c_prepared over select_1c_simple",
        shown=gp is not None and gs is not None and
        f"{_ratio(gp, gs):.2f} (prepared {gp:.2f}, simple {gs:.2f})")
    idle = (extras.get("idle") or {}).get("pgstash_pass") or {}
    kb = idle.get("kb_per_connection") if idle.get("opened") else None
    add("#20 ≤ 2 KiB of proxy memory per idle client (pgstash_pass)",
        kb, "<=", 2.0, f"KiB of RSS per idle connection (absolute), "
        f"{idle.get('opened', 0):,} connections", shown=kb and f"{kb:.2f} KiB")


TARGET_RATES = (20, 1000)   # the direct write rates of the latency targets


def _direct_writes(extras):
    """The replication targets on the direct-writes workload: for each
    pgstash following the stream and each rate, commit-to-invalidation p50
    ≤ 5 ms and p99 ≤ 50 ms (a percentile on a write never seen fails), and
    no stale read beyond max_lag."""
    dw = extras.get("direct_writes") or {}
    out = []
    for s in ("pgstash_repl", "pgstash_redis_repl"):
        per = dw.get(s)
        if not per:
            continue
        for rate, res in sorted(per.items(), key=lambda x: int(x[0])):
            if int(rate) not in TARGET_RATES:
                continue   # e.g. a --direct-rates 1 probe: stale reads only
            for q, limit in (("p50", 5.0), ("p99", 50.0)):
                name = (f"commit-to-invalidation {q} ≤ {limit:g} ms ({s}, {rate} direct "
                        "writes/s)")
                basis = (f"direct_writes: {q} of acknowledgement → first read through "
                         f"{s} returning the write, ms (absolute)")
                if "writes" not in res:
                    out.append({"name": name, "ratio": None, "op": "<=", "threshold": limit,
                                "status": "N/A", "basis": basis + "; the run failed"})
                elif res.get(f"lag_{q}_never"):
                    out.append({"name": name, "ratio": None, "shown": "never", "op": "<=",
                                "threshold": limit, "status": "FAIL",
                                "basis": basis + "; the percentile falls on writes never seen"})
                else:
                    v = res.get(f"lag_{q}_ms")
                    out.append({"name": name, "ratio": v, "op": "<=", "threshold": limit,
                                "status": "PASS" if v <= limit else "FAIL", "basis": basis})
        ran = [res for res in per.values() if "writes" in res]
        stale = sum(res["stale_reads"] for res in ran)
        out.append({"name": f"no stale read beyond max_lag under direct writes ({s})",
                    "ratio": float(stale), "op": "==", "threshold": 0.0,
                    "status": ("PASS" if stale == 0 else "FAIL") if ran else "N/A",
                    "basis": "direct_writes: reads returning a value older than one "
                             "acknowledged > 500 ms before the read began, every rate "
                             "(absolute)"})
    return out


def _cluster(summary, extras, add, info):
    """Redis Cluster (issue #18): pgstash on the local cluster (3 masters
    unless --cluster-masters says otherwise) against the same configuration
    on the single Redis. Lines are added through `add`/`info`; returns
    nothing more."""
    def tps(w, s):
        return _get(summary, w, s, "tps")

    def p50(w, s):
        return _get(summary, w, s, "p50_ms")

    for w in ("select_8c", "select_32c", "hot_zipf"):
        add(f"Redis Cluster hit throughput ≥ 0.9× single Redis, strict mode ({w})",
            _ratio(tps(w, "pgstash_cluster"), tps(w, "pgstash_redis")), ">=", 0.9,
            f"tps pgstash_cluster / pgstash_redis, {w}")
    add("Redis Cluster strict-mode hit p50 at 1 client ≤ 1.2× single Redis "
        "(select_1c_extended)",
        _ratio(p50("select_1c_extended", "pgstash_cluster"),
               p50("select_1c_extended", "pgstash_redis")), "<=", 1.2,
        "p50 pgstash_cluster / pgstash_redis, select_1c_extended")
    info("Redis Cluster miss path against single Redis (adaptive = false, uniform_miss)",
         _ratio(tps("uniform_miss", "pgstash_cluster_always"),
                tps("uniform_miss", "pgstash_always")),
         "tps pgstash_cluster_always / pgstash_always, uniform_miss")
    info("Redis Cluster update-heavy mix against single Redis (mix_50_50)",
         _ratio(tps("mix_50_50", "pgstash_cluster"), tps("mix_50_50", "pgstash_redis")),
         "tps pgstash_cluster / pgstash_redis, mix_50_50")
    keys = ((extras.get("redis_topology") or {}).get("cluster") or {}).get("keys") or {}
    entries = {p: sum(v["entries"] for v in k["prefixes"].values()) for p, k in keys.items()}
    total = sum(entries.values())
    info(f"Redis Cluster: smallest share of the cache entries on one master "
         f"({len(entries)} masters)", min(entries.values()) / total if total else None,
         "entries (SCAN prefix e:*) on the master holding fewest / all entries, after the "
         "runs; " + ", ".join(f"{p}: {n}" for p, n in sorted(entries.items())))
    return []
