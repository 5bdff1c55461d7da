"""The benchmark's workloads: which pgbench scripts, how many clients, which
protocol, what is reported (latency at one client, throughput otherwise),
and how many transactions warm a cache before measuring."""

import os
from dataclasses import dataclass, field

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workloads")

KEYS = 1000          # working set of the point-select workloads
ZIPF = 1.3           # random_zipfian parameter of the hot set (~90% of draws in the top 1000)
ROWS_10KB = 90       # rows of ~115 wire bytes each
ROWS_1MB = 8700


def script(name):
    return os.path.join(HERE, name)


@dataclass
class Workload:
    name: str
    title: str
    measures: str
    scripts: list                 # [(path, weight or None)]
    clients: int
    mode: str = "extended"        # pgbench -M
    metric: str = "tps"           # "tps" (higher is better) or "latency" (p50, lower is better)
    connect: bool = False         # pgbench --connect: a new connection per transaction
    warm_tx: int = 0              # transactions (in total) run before measuring, on caching systems
    sampling_rate: float = 0.05   # of the per-transaction log
    defines: dict = field(default_factory=dict)


def all_workloads(naccounts):
    base = {"keys": KEYS, "naccounts": naccounts}
    ps = [(script("point_select.sql"), None)]

    def point(name, title, measures, clients, warm_tx=3 * KEYS, **kw):
        return Workload(name, title, measures, ps, clients, defines=dict(base),
                        warm_tx=warm_tx, **kw)

    w = [
        point("select_1c_simple", "point select, 1 client, -M simple",
              "latency of one round trip, simple protocol", 1, mode="simple",
              metric="latency", sampling_rate=1.0),
        point("select_1c_extended", "point select, 1 client, -M extended",
              "latency, extended protocol (Parse/Bind/Execute/Sync per query)", 1,
              metric="latency", sampling_rate=1.0),
        point("select_1c_prepared", "point select, 1 client, -M prepared",
              "latency, named prepared statement (Bind/Execute/Sync)", 1, mode="prepared",
              metric="latency", sampling_rate=1.0),
        point("select_8c", "point select, 8 clients", "throughput", 8),
        point("select_32c", "point select, 32 clients", "throughput", 32),
        point("select_128c", "point select, 128 clients", "throughput at saturation", 128),
        # The same three counts with the two other protocols (issue #20's
        # pass-through targets are per protocol).
        *[point(f"select_{c}c_{m}", f"point select, {c} clients, -M {m}",
                f"throughput, {'simple' if m == 'simple' else 'named prepared'} protocol",
                c, mode=m)
          for m in ("simple", "prepared") for c in (8, 32, 128)],
        Workload("hot_zipf", "hot set (zipfian over all accounts), 8 clients",
                 "throughput when most reads are hits", [(script("hot_zipf.sql"), None)], 8,
                 defines={**base, "zipf": ZIPF}, warm_tx=5000),
        Workload("uniform_miss", "uniform over all accounts, 8 clients",
                 "throughput when most reads miss (cost of the miss path)",
                 [(script("uniform_all.sql"), None)], 8, defines=dict(base)),
        Workload("heavy_join", "join + aggregates over 20k rows, 8 clients",
                 "throughput of a read that costs Postgres several ms",
                 [(script("heavy_join.sql"), None)], 8, defines=dict(base), warm_tx=150,
                 sampling_rate=1.0),
        Workload("result_10kb", "~10 KB result, 8 clients", "throughput, mid-size results",
                 [(script("range.sql"), None)], 8, defines={"rows": ROWS_10KB}, warm_tx=100,
                 sampling_rate=0.2),
        Workload("result_1mb", "~1 MB result, 8 clients", "throughput, large results",
                 [(script("range.sql"), None)], 8, defines={"rows": ROWS_1MB}, warm_tx=60,
                 sampling_rate=1.0),
        point("churn_connect", "point select, new connection per transaction, 8 clients",
              "connection setup cost (pgbench --connect)", 8, connect=True, sampling_rate=1.0,
              warm_tx=0),
        # Writes last in a round: they invalidate the cached accounts.
        Workload("mix_95_5", "95% reads / 5% updates on the same 1000 rows, 8 clients",
                 "throughput with invalidations",
                 [(script("point_select.sql"), 95), (script("update_same.sql"), 5)], 8,
                 defines=dict(base), warm_tx=3 * KEYS),
        Workload("mix_50_50", "50% reads / 50% updates on the same 1000 rows, 8 clients",
                 "throughput, update-heavy",
                 [(script("point_select.sql"), 50), (script("update_same.sql"), 50)], 8,
                 defines=dict(base), warm_tx=3 * KEYS),
    ]
    return w


def rw_check(mode, violfile, clients=8):
    """The read-your-writes checker (see workloads/rw_check.sql)."""
    return Workload(f"rw_check_{mode}", f"read-your-writes check, -M {mode}",
                    "violations (reads after an acknowledged update returning the old value)",
                    [(script("rw_check.sql"), None)], clients, mode=mode,
                    defines={"violfile": violfile})
