"""The PNG chart: throughput relative to direct Postgres per workload, and
1-client p50 latency, one bar per system."""

from .report import SHORT, SYSTEMS

COLORS = {"direct": "#7f7f7f", "pgbouncer": "#1f77b4", "pgpool": "#9467bd",
          "pgstash_pass": "#ffbb78", "pgstash_pass1": "#dbdb8d", "pgstash_log0": "#e7ba52", "pgstash_mem": "#ff7f0e", "pgstash_redis": "#d62728",
          "pgstash_fast": "#9467bd", "pgstash_always": "#8c564b",
          "pgstash_repl": "#2ca02c", "pgstash_redis_repl": "#17becf",
          "pgbouncer_tls": "#aec7e8", "pgstash_tls": "#c49c94", "pgstash_mem_tls": "#f7b6d2",
          "pgstash_cluster": "#e377c2", "pgstash_cluster_always": "#bcbd22"}


def draw(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    systems = [s for s in SYSTEMS if s in result["systems"]]
    tput = [w["name"] for w in result["workloads"] if w["metric"] == "tps"]
    lat = [w["name"] for w in result["workloads"] if w["metric"] == "latency"]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(15, 10),
                                   gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        ys = []
        for w in tput:
            cell = summary.get(w, {})
            d = (cell.get("direct") or {}).get("tps")
            v = (cell.get(s) or {}).get("tps")
            ys.append(v / d if v and d else 0)
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(tput))]
        ax1.bar(xs, ys, width, label=SHORT[s], color=COLORS[s])
    ax1.axhline(1.0, color="black", linewidth=0.8)
    ax1.set_xticks(range(len(tput)))
    ax1.set_xticklabels(tput, rotation=20, ha="right")
    ax1.set_ylabel("throughput / direct Postgres")
    ax1.set_yscale("log")
    ax1.set_title("Throughput relative to direct Postgres (higher is better, log scale)")
    ax1.legend(ncol=len(systems), fontsize=8, loc="upper left")

    for i, s in enumerate(systems):
        ys = [((summary.get(w, {}).get(s) or {}).get("p50_ms") or 0) for w in lat]
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(lat))]
        ax2.bar(xs, ys, width, label=SHORT[s], color=COLORS[s])
    rb = (result.get("redis_benchmark") or {}).get("p50_ms")
    if rb:
        ax2.axhline(rb, color="#d62728", linestyle="--", linewidth=0.8,
                    label="redis-benchmark GET p50")
    ax2.set_xticks(range(len(lat)))
    ax2.set_xticklabels(lat)
    ax2.set_ylabel("p50 latency, ms")
    ax2.set_title("Point select at 1 client: p50 latency (lower is better)")
    ax2.legend(ncol=4, fontsize=8)

    m = result["machine"]
    fig.suptitle(f"pgstash {result['versions']['pgstash_git']} — {m['nproc']} CPUs "
                 f"({m['cpu']}), {result['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
