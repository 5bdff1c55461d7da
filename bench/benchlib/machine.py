"""What the numbers were measured on: the machine and every version."""

import os
import platform
import subprocess

from .systems import PG_BIN


def _first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    }


def versions(repo, binary):
    rev = _first_line(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "proxy", "rules",
                            "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout
    return {
        "postgres": _first_line([f"{PG_BIN}/postgres", "--version"]),
        "pgbench": _first_line([f"{PG_BIN}/pgbench", "--version"]),
        "pgbouncer": _first_line(["pgbouncer", "--version"]),
        "pgpool": _first_line(["pgpool", "--version"]),
        "redis": _first_line(["redis-server", "--version"]),
        "pgstash": _first_line([binary, "--version"]),
        "pgstash_git": rev + (" (with uncommitted changes in proxy/ or rules/)" if dirty else ""),
    }
