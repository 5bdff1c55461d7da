"""Summaries and the Markdown report. Every figure is shown next to its
ratio against another system measured in the same run, because absolute
numbers only mean something on the machine that produced them."""

import statistics

from . import baseline, cluster_report

SYSTEMS = ["direct", "pgbouncer", "pgbouncer_tls", "pgpool", "pgstash_pass", "pgstash_tls",
           "pgstash_pass1", "pgstash_log0", "pgstash_mem", "pgstash_mem_tls", "pgstash_repl",
           "pgstash_redis", "pgstash_redis_repl", "pgstash_fast", "pgstash_always",
           "pgstash_cluster", "pgstash_cluster_always"]
SHORT = {"direct": "direct", "pgbouncer": "PgBouncer", "pgbouncer_tls": "PgBouncer TLS",
         "pgpool": "pgpool-II",
         "pgstash_pass": "pgstash pass", "pgstash_tls": "pgstash pass TLS",
         "pgstash_pass1": "pgstash pass 1w",
         "pgstash_log0": "pgstash pass log-all",
         "pgstash_mem": "pgstash mem", "pgstash_mem_tls": "pgstash mem TLS", "pgstash_redis": "pgstash redis",
         "pgstash_fast": "pgstash redis fast", "pgstash_always": "pgstash redis adaptive off",
         "pgstash_repl": "pgstash mem repl", "pgstash_redis_repl": "pgstash redis repl",
         "pgstash_cluster": "pgstash cluster",
         "pgstash_cluster_always": "pgstash cluster adaptive off"}


def short(key):
    """The report's name of a system, baseline twins included."""
    name = SHORT.get(baseline.original(key), key)
    return name + " @base" if baseline.is_twin(key) else name


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs):
    """runs -> {workload: {system: medians over the rounds, hit ratio, failures}}."""
    out = {}
    for r in runs:
        out.setdefault(r["workload"], {}).setdefault(r["system"], []).append(r)
    summary = {}
    for w, per in out.items():
        summary[w] = {}
        for s, rs in per.items():
            good = [r for r in rs if r["ok"]]
            use = good or rs
            hits = sum(r.get("hits") or 0 for r in rs)
            misses = sum(r.get("misses") or 0 for r in rs)
            summary[w][s] = {
                "tps": _median([r.get("tps") for r in use]),
                "p50_ms": _median([r.get("p50_ms") for r in use]),
                "p99_ms": _median([r.get("p99_ms") for r in use]),
                "runs": len(rs),
                "ok_runs": len(good),
                "failed_transactions": sum(r.get("failed") or 0 for r in rs),
                "errors": next((r["errors"] for r in rs if r.get("errors")), []),
                "hit_ratio": (hits / (hits + misses)) if (hits + misses) else None,
                "cpu_user_us": _median([r.get("cpu_user_us") for r in use]),
                "cpu_sys_us": _median([r.get("cpu_sys_us") for r in use]),
            }
    return summary


def fmt_num(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def ratio(a, b):
    return None if a is None or not b else a / b


def _mark(cell):
    return cell if cell["ok_runs"] == cell["runs"] else None


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def against_baseline(result):
    """New / baseline ratios for every workload and every pgstash system that
    ran from both binaries: tps on every workload, p50 on the 1-client ones.
    -> list of rows (the .json's `against_baseline`)."""
    summary = result["summary"]
    per_round = {}
    for r in result["runs"]:
        per_round.setdefault((r["workload"], r["system"]), {})[r["round"]] = r
    rows = []
    for w in result["workloads"]:
        cells = summary.get(w["name"], {})
        for s in SYSTEMS:
            new, old = cells.get(s), cells.get(baseline.twin(s))
            if not new or not old:
                continue
            row = {"workload": w["name"], "system": s, "clients": w["clients"],
                   "ok": bool(_mark(new) and _mark(old))}
            for m, key, higher in (("tps", "tps", True), ("p50", "p50_ms", False)):
                a, b = new.get(key), old.get(key)
                r = ratio(a, b) if m == "tps" or w["clients"] == 1 else None
                row.update({f"{m}_new": a, f"{m}_base": b, f"{m}_ratio": r,
                            f"{m}_verdict": baseline.verdict(r, higher)})
            rn = per_round.get((w["name"], s), {})
            ro = per_round.get((w["name"], baseline.twin(s)), {})
            row["tps_ratio_rounds"] = [ratio(rn[k].get("tps"), ro[k].get("tps"))
                                       for k in sorted(rn) if k in ro]
            for m in ("hit_ratio", "cpu_user_us", "cpu_sys_us"):
                row[f"{m}_new"], row[f"{m}_base"] = new.get(m), old.get(m)
            rows.append(row)
    return rows


MARK = {"within": "✓", "better": "▲", "worse": "▼", None: ""}

HIT_SYSTEMS = ("pgpool", "pgstash_mem", "pgstash_mem_tls", "pgstash_repl", "pgstash_redis", "pgstash_redis_repl",
               "pgstash_fast", "pgstash_always", "pgstash_cluster", "pgstash_cluster_always")


def _baseline_section(result):
    b, rows, v = result["baseline"], result.get("against_baseline") or [], result["versions"]
    subject = b.get("subject", "")
    subject = subject if len(subject) <= 72 else subject[:71] + "…"
    src = (f"built from commit `{b['short']}` “{subject}” with `--baseline-rev {b['rev']}`"
           if b["source"] == "rev" else f"given as `{b['path']}`")
    out = ["## Against the baseline", "",
           f"Every selected pgstash system also ran from the baseline binary **{b['label']}** "
           f"(`{b['version']}`, {src}) as `<system>@base`: the same configuration (its Redis "
           "keys under a prefix of their own), its own ports, in the same alternation (the "
           "twin right after its system, right before it in even rounds). New is this "
           f"tree's binary (`{v.get('pgstash_git')}`). Ratios are new / baseline of the "
           "medians over rounds: tps (higher is better) on every workload, p50 latency "
           "(lower is better) on the 1-client ones. ✓ within ±3%, ▲ more than 3% better, "
           "▼ more than 3% worse.", "",
           f"Binaries: new sha256 `{b.get('new_sha256', '?')[:16]}`, baseline sha256 "
           f"`{b['sha256'][:16]}`.", ""]
    if not rows:
        return out + ["No workload ran on both binaries.", ""]

    def rat(r, m):
        x = r[f"{m}_ratio"]
        return "–" if x is None else f"{x:.3f}× {MARK[r[f'{m}_verdict']]}"

    def cpu(r, side):
        u, k = r[f"cpu_user_us_{side}"], r[f"cpu_sys_us_{side}"]
        return "–" if u is None else f"{u + k:.1f}"

    def hits(r, side):
        h = r[f"hit_ratio_{side}"]
        return "–" if h is None else f"{h * 100:.0f}%"

    table = []
    for r in rows:
        p50 = r["p50_ratio"] is not None
        table.append([
            f"`{r['workload']}`", SHORT[r["system"]] + ("" if r["ok"] else " ✗"),
            fmt_num(r["tps_new"]), fmt_num(r["tps_base"]), rat(r, "tps"),
            ", ".join(f"{x:.3f}" for x in r["tps_ratio_rounds"] if x is not None) or "–",
            f"{r['p50_new']:.3f}" if p50 else "–", f"{r['p50_base']:.3f}" if p50 else "–",
            rat(r, "p50"), f"{cpu(r, 'new')} / {cpu(r, 'base')}",
            f"{hits(r, 'new')} / {hits(r, 'base')}"])
    out += [md_table(["workload", "system", "tps new", "tps base", "tps new/base",
                      "tps new/base per round", "p50 new ms", "p50 base ms", "p50 new/base",
                      "proxy CPU µs/tx new / base", "hits new / base"], table), ""]
    verdicts = [r[f"{m}_verdict"] for r in rows for m in ("tps", "p50")
                if r[f"{m}_verdict"]]
    out.append(f"**{verdicts.count('within')} of {len(verdicts)} ratios within ±3%**, "
               f"{verdicts.count('better')} better, {verdicts.count('worse')} worse.")
    idle = result.get("idle") or {}
    n, o = idle.get("pgstash_pass") or {}, idle.get(baseline.twin("pgstash_pass")) or {}
    if n.get("kb_per_connection") is not None and o.get("kb_per_connection") is not None:
        out += ["", f"Idle connections (pgstash pass): {n['kb_per_connection']:.2f} KiB per "
                f"connection new, {o['kb_per_connection']:.2f} baseline."]
    if result["params"]["quick"] or result["params"]["rounds"] < 3:
        out += ["", f"{result['params']['rounds']} round(s) of {result['params']['duration_s']} s "
                "runs: on a shared machine a difference of a few percent is within the noise "
                "of so short a run; judge ±3% on a full run (3 rounds or more)."]
    return out + [""]


def lag_cell(res, q):
    """A commit-to-invalidation percentile in ms, or `never` when it falls on
    a write no read returned during the run."""
    if res.get(f"lag_{q}_never"):
        return "never"
    v = res.get(f"lag_{q}_ms")
    return "–" if v is None else f"{v:.1f}"


def _direct_writes_section(result):
    p = result["params"].get("direct_writes") or {}
    lag_ms = (p.get("max_lag_s") or 0.5) * 1000
    out = ["## Writes that bypass pgstash", "",
           f"The `direct_writes` workload (`benchlib/direct_writes.py`): a writer updates "
           f"{p.get('keys')} hot accounts (aid {p.get('first_aid')}…) *directly on Postgres* "
           "at a fixed rate (autocommit, `synchronous_commit = on` in its session), while "
           f"{p.get('readers')} readers read the same rows *through the system* in tight loops "
           f"(`SELECT abalance … WHERE aid = $1`, extended protocol), for {p.get('seconds')} s "
           f"of writes + {p.get('tail_s')} s of reads. **Seen after**: from a write's "
           "acknowledgement to the end of the first read that returned it (or a later "
           "value): commit-to-invalidation latency plus up to one read of the row (`direct` "
           "shows that floor); `never`: the percentile falls on writes no read returned "
           f"before the run ended. **Stale**: reads returning a value older than one "
           f"acknowledged more than {lag_ms:.0f} ms (pgstash's `max_lag`) before the read "
           "started; **max staleness**: the most a read's value had been superseded when it "
           "started. pgstash without `--replication` (and pgpool-II) cannot see these "
           "writes: their stale reads are expected. **lag bypass**: reads pgstash sent "
           "upstream because the replication stream was not proven current "
           "(`pgstash_cache_bypass_total{reason=\"replication_lag\"}`).", ""]
    rows = []
    for rate in p.get("rates") or []:
        for s in SYSTEMS:
            res = (result["direct_writes"].get(s) or {}).get(str(rate))
            if res is None:
                continue
            if "writes" not in res:
                rows.append([short(s), f"{rate}/s", "failed: " + "; ".join(res["errors"][:1])]
                            + ["–"] * 9)
                continue
            h, m = res.get("hits"), res.get("misses")
            hr = f"{100 * h / (h + m):.1f}%" if h is not None and (h + m) else "–"
            lb = res.get("replication_lag_bypass")
            rows.append([
                short(s) + ("" if res["ok"] else " ✗"),
                f"{rate}/s ({res['writes_per_s']:.0f})", f"{res['writes']:,}",
                f"{lag_cell(res, 'p50')} / {lag_cell(res, 'p99')} / {lag_cell(res, 'max')}",
                f"{res['unseen']:,}", f"{res['stale_reads']:,}",
                f"{res['max_staleness_ms']:.1f}", f"{res['reads_per_s']:,.0f}", hr,
                "–" if lb is None else f"{lb:,.0f}",
                f"{res['write_ack_p50_ms']:.2f}" if res.get("write_ack_p50_ms") is not None
                else "–"])
    out += [md_table(["system", "writes/s target (achieved)", "writes",
                      "seen after p50 / p99 / max ms", "never seen", "stale reads",
                      "max staleness ms", "reads/s", "cache hits", "lag bypass",
                      "write ack p50 ms"], rows), ""]
    examples = [f"- {short(s)} at {rate}/s: {x}"
                for s, per in result["direct_writes"].items() if s.startswith("pgstash_")
                and "repl" in s for rate, res in per.items()
                for x in (res.get("stale_examples") or [])[:3]]
    if examples:
        out += ["Stale reads with replication on (a pgstash bug):", ""] + examples + [""]
    return out


TLS_PAIRS = (("pgbouncer_tls", "pgbouncer"), ("pgstash_tls", "pgstash_pass"),
             ("pgstash_mem_tls", "pgstash_mem"))


def _tls_section(result, systems):
    """What TLS on both sides costs each proxy: tps with TLS / tps without,
    per workload, and the protocol and ciphers negotiated."""
    pairs = [(a, b) for a, b in TLS_PAIRS if a in systems and b in systems]
    if not pairs:
        return []
    out = ["## TLS on both sides", "",
           "Each `*_tls` system is its plain counterpart with TLS between pgbench and the "
           "proxy (pgbench `sslmode=require`, the proxy requiring it) and between the proxy "
           "and Postgres (`sslmode=require` / `server_tls_sslmode = require`), with a "
           "certificate of the run's own test CA. pgbench keeps its connections for the "
           "whole run (no `--connect`), and both proxies keep their server connections, so "
           "the handshakes are outside the measured runs: this is the cost of encrypting "
           "the traffic. Throughput with TLS / without (higher is better: the share each "
           "proxy keeps), and pgstash's share against PgBouncer's.", ""]
    summary = result["summary"]
    rows = []
    for w in result["workloads"]:
        if w["metric"] != "tps":
            continue
        cells = summary.get(w["name"], {})

        def kept(a, b):
            return ratio((cells.get(a) or {}).get("tps"), (cells.get(b) or {}).get("tps"))
        k = {a: kept(a, b) for a, b in pairs}
        row = [f"`{w['name']}`"] + [fmt_ratio(k[a]) for a, _ in pairs]
        if "pgbouncer_tls" in k and "pgstash_tls" in k:
            row.append(fmt_ratio(ratio(k["pgstash_tls"], k["pgbouncer_tls"])))
        rows.append(row)
    header = ["workload"] + [f"{SHORT[a]} / {SHORT[b]}" for a, b in pairs]
    if any(a == "pgstash_tls" for a, _ in pairs) and any(a == "pgbouncer_tls"
                                                        for a, _ in pairs):
        header.append("pgstash's share / PgBouncer's")
    out += [md_table(header, rows), ""]
    tls = result.get("tls") or {}
    if tls.get("upstream"):
        out.append("Server connections with TLS as Postgres saw them after the runs "
                   "(`pg_stat_ssl`): " + "; ".join(
                       f"{r[3]} × {r[0]} {r[1]} ({r[2]} bits)" for r in tls["upstream"]
                       if len(r) >= 4) + ".")
    for key, c in (tls.get("clients") or {}).items():
        out.append(f"- client → {short(key)} (`openssl s_client -starttls postgres`): "
                   + (c.get("error") or f"{c.get('protocol')}, {c.get('cipher')}, "
                      f"server key {c.get('key')}"))
    return out + [""]


def _unauth_section(result):
    u = result.get("unauth") or {}
    names = [n for n in ("pgstash", "pgbouncer") if n in u]
    if not names:
        return []
    n = result["params"].get("unauth_connections")
    out = ["## Unauthenticated client connections", "",
           f"`benchlib/unauth.py`: a pgstash and a PgBouncer of their own, both asking for "
           f"SCRAM-SHA-256 (one configured user), `max_client_conn` 20,000, login timeout "
           f"5 min; {n:,} connections to each from one asyncio process: half *silent* (TCP "
           "connected, nothing sent), half *inside a SCRAM exchange* (StartupMessage, "
           "SASLInitialResponse, the server's SASLContinue received, the client-final "
           "message never sent). Proxy RSS and open file descriptors (which show that the "
           "proxy accepted every connection) from `/proc/PID` before, after the silent "
           "half and after the SCRAM half, 2 s after each.", ""]
    rows = []
    for name in names:
        c = u[name]
        rows.append([
            "pgstash" if name == "pgstash" else "PgBouncer",
            f"{c['silent']:,} + {c['in_scram']:,} / {c['requested']:,}",
            f"{c['fds_before']} → {c['fds_silent']} → {c['fds_after']}",
            f"{c['rss_before_kb'] / 1024:.1f} → {c['rss_silent_kb'] / 1024:.1f} → "
            f"{c['rss_after_kb'] / 1024:.1f} MiB",
            fmt_num(c["kb_per_connection"], 2), fmt_num(c["kb_per_silent"], 2),
            fmt_num(c["kb_per_in_scram"], 2), f"{c['closed_by_proxy']:,}",
            "; ".join(c.get("first_errors") or []) or "ok"])
    out += [md_table(["proxy", "opened (silent + in SCRAM)", "open fds", "RSS",
                      "KiB / connection", "KiB / silent", "KiB / in SCRAM",
                      "closed by the proxy", "notes"], rows), ""]
    for name in names:
        for fname, text in (u.get("configs") or {}).get(name, {}).items():
            out += [f"<details><summary>{name} (unauthenticated connections): {fname}"
                    "</summary>", "", "```", text.strip(), "```", "", "</details>", ""]
    return out


def render(result):
    m, v, p = result["machine"], result["versions"], result["params"]
    summary, workloads = result["summary"], result["workloads"]
    systems = [s for s in SYSTEMS if s in result["systems"]]
    out = [f"# pgstash benchmark — {result['started']}", ""]
    out.append(f"`bench/run{' --quick' if p['quick'] else ''}`: {p['rounds']} round(s), "
               f"{p['duration_s']} s per run, pgbench scale {p['scale']}, pool size "
               f"{p['pool_size']}, systems run in alternation within each round. "
               f"Total {result['elapsed_s'] / 60:.1f} min.")
    out += ["", f"**Machine**: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, "
            f"{m['os']}, Linux {m['kernel']}. Clients (pgbench) and servers share these CPUs.",
            "", "**Versions**: " + "; ".join(f"{k} `{val}`" for k, val in v.items()), ""]

    out += ["## Targets", "", "```"]
    for t in result["targets"]:
        val = t.get("shown") or ("n/a" if t["ratio"] is None else f"{t['ratio']:.2f}")
        goal = "" if t["threshold"] is None else f"target {t['op']} {t['threshold']:g}; "
        out.append(f"{t['status']:4}  {t['name']}: {val} ({goal}{t['basis']})")
    out += ["```", ""]
    if result.get("baseline"):
        out += _baseline_section(result)
    out += cluster_report.section(result)

    tput = [w for w in workloads if w["metric"] == "tps"]
    lat = [w for w in workloads if w["metric"] == "latency"]
    out += ["## Throughput", "",
            "Transactions per second (median over rounds); in brackets the ratio to direct "
            "Postgres in the same run. ✗ marks a system with failed runs (see Errors).", ""]
    rows = []
    for w in tput:
        cells = summary.get(w["name"], {})
        d = (cells.get("direct") or {}).get("tps")
        row = [f"`{w['name']}`"]
        for s in systems:
            c = cells.get(s)
            if not c:
                row.append("–")
                continue
            bad = "" if _mark(c) else " ✗"
            row.append(f"{fmt_num(c['tps'])} ({fmt_ratio(ratio(c['tps'], d))}){bad}")
        rows.append(row)
    out += [md_table(["workload"] + [SHORT[s] for s in systems], rows), ""]

    out += ["## Latency at 1 client", "",
            "p50 / p99 in ms from pgbench's per-transaction log (median over rounds); "
            "in brackets p50 relative to direct (lower is better).", ""]
    rows = []
    for w in lat + [w for w in tput if w["name"].startswith("heavy")]:
        cells = summary.get(w["name"], {})
        d = (cells.get("direct") or {}).get("p50_ms")
        row = [f"`{w['name']}`"]
        for s in systems:
            c = cells.get(s)
            if not c or c["p50_ms"] is None:
                row.append("–")
                continue
            bad = "" if _mark(c) else " ✗"
            row.append(f"{c['p50_ms']:.3f} / {c['p99_ms']:.3f} "
                       f"({fmt_ratio(ratio(c['p50_ms'], d))}){bad}")
        rows.append(row)
    out += [md_table(["workload"] + [SHORT[s] for s in systems], rows), ""]
    rb = result.get("redis_benchmark") or {}
    if rb.get("p50_ms") is not None:
        out += [f"Floor for a Redis-served hit: `redis-benchmark -t get -c 1 -n 20000` "
                f"p50 {rb['p50_ms']:.3f} ms, p99 {rb['p99_ms']:.3f} ms "
                f"({fmt_num(rb['rps'])} GET/s).", ""]

    out += ["## pgstash against the others", "",
            "Ratios of the same metric measured in the same run: throughput ratios "
            "(higher is better) for throughput workloads, p50 latency ratios (lower is "
            "better) for the 1-client ones.", ""]
    pairs = [("pgstash_pass", "pgbouncer"), ("pgstash_pass1", "pgbouncer"), ("pgstash_pass", "direct"),
             ("pgstash_mem", "direct"), ("pgstash_mem", "pgpool"),
             ("pgstash_redis", "direct"), ("pgstash_fast", "direct"),
             ("pgstash_mem", "pgstash_pass"), ("pgstash_redis", "pgstash_pass"),
             ("pgstash_fast", "pgstash_pass"), ("pgstash_always", "pgstash_pass"),
             ("pgstash_repl", "pgstash_mem"), ("pgstash_redis_repl", "pgstash_redis"),
             ("pgstash_tls", "pgbouncer_tls"), ("pgstash_mem_tls", "pgbouncer_tls"),
             ("pgstash_cluster", "pgstash_redis"), ("pgstash_cluster_always", "pgstash_always"),
             ("pgstash_cluster", "pgstash_pass"), ("pgstash_cluster_always", "pgstash_pass")]
    pairs = [(a, b) for a, b in pairs if a in systems and b in systems]
    rows = []
    for w in workloads:
        key = "p50_ms" if w["metric"] == "latency" else "tps"
        cells = summary.get(w["name"], {})
        row = [f"`{w['name']}`", "p50" if key == "p50_ms" else "tps"]
        for a, b in pairs:
            row.append(fmt_ratio(ratio((cells.get(a) or {}).get(key),
                                       (cells.get(b) or {}).get(key))))
        rows.append(row)
    out += [md_table(["workload", "metric"] + [f"{SHORT[a]} / {SHORT[b]}" for a, b in pairs],
                     rows), ""]

    out += ["## Cache hit ratios", "",
            "Hits / (hits + misses) during the measured runs (warm-up excluded): pgstash "
            "from `pgstash_cache_hits_total` / `pgstash_cache_misses_total` on its metrics "
            "port, pgpool-II from `SHOW pool_cache`.", ""]
    hit_systems = [s for s in HIT_SYSTEMS if s in systems]
    rows = []
    for w in workloads:
        cells = summary.get(w["name"], {})
        row = [f"`{w['name']}`"]
        for s in hit_systems:
            hr = (cells.get(s) or {}).get("hit_ratio")
            row.append("–" if hr is None else f"{hr * 100:.1f}%")
        rows.append(row)
    out += [md_table(["workload"] + [SHORT[s] for s in hit_systems], rows), ""]

    out += ["## Proxy CPU per transaction", "",
            "User / system CPU microseconds the proxy process used per transaction during "
            "the measured runs (`/proc/PID/stat`; PgBouncer and pgstash are one process "
            "each). On a machine where clients, proxy and Postgres share the cores, this "
            "is what a proxy takes away from the others.", ""]
    cpu_systems = [s for s in ("pgbouncer", "pgbouncer_tls", "pgstash_pass", "pgstash_tls",
                               "pgstash_pass1", "pgstash_log0", "pgstash_mem",
                               "pgstash_mem_tls", "pgstash_repl", "pgstash_redis",
                               "pgstash_redis_repl", "pgstash_fast", "pgstash_always",
                               "pgstash_cluster", "pgstash_cluster_always")
                   if s in systems]
    rows = []
    for w in workloads:
        if w["clients"] == 1:
            continue
        cells = summary.get(w["name"], {})
        row = [f"`{w['name']}`"]
        for s in cpu_systems:
            c = cells.get(s) or {}
            u, k = c.get("cpu_user_us"), c.get("cpu_sys_us")
            row.append("–" if u is None else f"{u:.1f} / {k:.1f}")
        rows.append(row)
    out += [md_table(["workload"] + [SHORT[s] for s in cpu_systems], rows), ""]
    out += _tls_section(result, systems)

    out += ["## Read-your-writes check", "",
            "`workloads/rw_check.sql`, 8 clients: each client sets one of its own rows to a "
            "fresh value and reads it back twice after the acknowledgement; a read returning "
            "anything else is a violation (expected: 0). Any client's UPDATE invalidates the "
            "whole table, so only some reads are hits.", ""]
    rows = []
    for s, c in (result.get("rw_check") or {}).items():
        for mode, e in c["modes"].items():
            h, mi = e.get("hits"), e.get("misses")
            hr = f"{100 * h / (h + mi):.0f}%" if h is not None and (h + mi) else "–"
            rows.append([short(s), mode, f"{e['transactions']:,}", e["violations"], hr,
                         "yes" if e["ok"] else "no: " + "; ".join(e["errors"][:1])])
    out += [md_table(["system", "-M", "transactions", "violations", "cache hits",
                      "pgbench ran clean"], rows), ""]
    examples = [f"- {short(s)} -M {m}: `{x}`"
                for s, c in (result.get("rw_check") or {}).items()
                for m, e in c["modes"].items() for x in e.get("examples", [])[:2]]
    if examples:
        out += ["Examples of stale reads:", ""] + examples + [""]

    if result.get("direct_writes"):
        out += _direct_writes_section(result)

    out += ["## Idle client connections", "",
            f"{p['idle_connections']:,} connections opened (startup + trust login, then idle); "
            "proxy RSS from /proc/PID/status before and after.", ""]
    rows = []
    for s, c in (result.get("idle") or {}).items():
        if c.get("not_applicable"):
            rows.append([short(s), "n/a", "–", "–", c["not_applicable"]])
            continue
        if not c.get("opened") or c.get("rss_after_kb") is None:
            rows.append([short(s), f"0 / {c['requested']:,}", "–", "–",
                         "; ".join(c.get("first_errors") or []) or "failed"])
            continue
        rows.append([short(s), f"{c['opened']:,} / {c['requested']:,}",
                     f"{c['rss_before_kb'] / 1024:.1f} → {c['rss_after_kb'] / 1024:.1f} MiB",
                     fmt_num(c["kb_per_connection"], 2),
                     "; ".join(c.get("first_errors") or []) or "ok"])
    out += [md_table(["system", "opened", "RSS", "KiB / connection", "notes"], rows), ""]
    out += _unauth_section(result)

    errs = []
    for w in workloads:
        for s in [x for k in systems for x in (k, baseline.twin(k))]:
            c = summary.get(w["name"], {}).get(s)
            if c and (c["ok_runs"] < c["runs"] or c["failed_transactions"]):
                errs.append(f"- `{w['name']}` on {short(s)}: {c['runs'] - c['ok_runs']} of "
                            f"{c['runs']} runs failed, {c['failed_transactions']} failed "
                            f"transactions; {' | '.join(c['errors'][:2])}")
    for s, c in (result.get("rw_check") or {}).items():
        for mode, e in c["modes"].items():
            if not e["ok"]:
                errs.append(f"- read-your-writes check -M {mode} on {short(s)}: "
                            f"{' | '.join(e['errors'][:2])}")
    for s, d in (result.get("deaths") or {}).items():
        errs.append(f"- **{short(s)} stopped running during the benchmark** "
                    f"(exit code {d['exit_code']}, noticed after `{d['after']}`); last log "
                    f"lines: `{' / '.join(d['log_tail'])[-400:]}`")
    out += ["## Errors", ""] + (errs or ["None: every run completed without errors."]) + [""]
    logs = result.get("log_findings") or {}
    if any(logs.values()):
        out += ["Lines of interest in the systems' logs (kept in `results/logs/`):", ""]
        for s, lines in logs.items():
            who = "Postgres server (behind every system)" if s == "direct" else short(s)
            for ln in lines[:5]:
                out.append(f"- {who}: `{ln[:200]}`")
        out.append("")

    out += ["## Workloads", ""]
    out += [md_table(["name", "what", "measures", "clients", "protocol"],
                     [[f"`{w['name']}`", w["title"], w["measures"], w["clients"], w["mode"]]
                      for w in workloads]), ""]
    out += ["## Configurations", ""]
    for s, d in result["systems"].items():
        for fname, text in d["configs"].items():
            out += [f"<details><summary>{d['label']}: {fname}</summary>", "", "```",
                    text.strip(), "```", "", "</details>", ""]
    return "\n".join(out)
