"""Running pgbench against one system and reading what it measured.

pgbench connects with libpq's sslmode of the system (PGSSLMODE): `require`
for the systems with TLS, `disable` for the others. Its connections persist
for the whole run (no --connect but in churn_connect), so the TLS handshakes
are not part of what a TLS run measures: the cost of encrypting traffic is.

Throughput comes from pgbench's summary ("tps = …"); latency percentiles
from its per-transaction log (-l), whose third column is the transaction's
latency in microseconds. High-rate workloads log a sample of transactions
(--sampling-rate) so that writing the log does not steal the CPU.
"""

import glob
import os
import re
import subprocess
import time

from .systems import DB, PG_BIN, PG_USER

PGBENCH = f"{PG_BIN}/pgbench"


def command(wl, system, seconds=None, transactions=None, log_prefix=None, defines=None):
    cmd = [PGBENCH, "-h", "127.0.0.1", "-p", str(system.port), "-U", PG_USER, "-n",
           "-M", wl.mode, "-c", str(wl.clients), "-j", str(min(wl.clients, 2))]
    if seconds is not None:
        cmd += ["-T", str(seconds)]
    else:
        cmd += ["-t", str(transactions)]
    for k, v in sorted({**wl.defines, **(defines or {})}.items()):
        cmd += ["-D", f"{k}={v}"]
    for script, weight in wl.scripts:
        cmd += ["-f", f"{script}@{weight}" if weight is not None else script]
    if wl.connect:
        cmd.append("--connect")
    if log_prefix:
        cmd += ["-l", f"--log-prefix={log_prefix}"]
        if wl.sampling_rate < 1:
            cmd.append(f"--sampling-rate={wl.sampling_rate}")
    cmd.append(DB)
    return cmd


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def read_latencies(prefix):
    """Latencies (ms) from every per-thread log file pgbench wrote."""
    out = []
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    out.append(int(parts[2]) / 1000.0)
        os.remove(path)
    out.sort()
    return out


def parse_summary(text):
    def grab(pattern, cast=float):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else None

    return {
        "tps": grab(r"^tps = ([0-9.]+)"),
        "transactions": grab(r"^number of transactions actually processed: (\d+)", int),
        "failed": grab(r"^number of failed transactions: (\d+)", int) or 0,
        "latency_avg_ms": grab(r"^latency average = ([0-9.]+) ms"),
        "connection_ms": grab(r"^(?:average )?(?:initial )?connection time = ([0-9.]+) ms"),
    }


def run(wl, system, seconds, log_prefix=None, transactions=None, defines=None, timeout=None):
    """One pgbench run. Returns a dict: tps, p50/p99 (ms), failures, errors."""
    cmd = command(wl, system, seconds=seconds, transactions=transactions,
                  log_prefix=log_prefix, defines=defines)
    started = time.monotonic()
    limit = timeout or ((seconds or 30) + 90)
    try:
        # The *_tls systems require TLS; the others are measured in plain
        # text (the bench Postgres offers TLS, which libpq's default would take).
        env = dict(os.environ, PGSSLMODE=system.sslmode)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                           cwd=os.path.dirname(wl.scripts[0][0]), env=env)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        # subprocess.run killed pgbench (its own child) on timeout.
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = f"pgbench timed out after {limit} s"
        rc = -1
    res = parse_summary(out)
    res["rc"] = rc
    res["wall_s"] = round(time.monotonic() - started, 2)
    errors = [ln for ln in err.splitlines() if "error" in ln.lower() or "fatal" in ln.lower()
              or "timed out" in ln]
    res["errors"] = errors[:5]
    res["error_lines"] = len(errors)
    if log_prefix:
        lat = read_latencies(log_prefix)
        res["samples"] = len(lat)
        res["p50_ms"] = percentile(lat, 0.50)
        res["p99_ms"] = percentile(lat, 0.99)
    res["ok"] = rc == 0 and res["tps"] is not None and res["failed"] == 0 and not errors
    return res
