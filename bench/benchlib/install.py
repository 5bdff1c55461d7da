"""Installing what the benchmark needs where it is missing: Debian packages
(apt-get update first), matplotlib for the chart (pip), and pgstash itself
(cargo build --release)."""

import glob
import importlib.util
import os
import shutil
import subprocess
import sys

from .systems import PG_BIN

# (package, a file it provides)
DEBIAN = [
    ("postgresql-15", f"{PG_BIN}/initdb"),
    ("postgresql-contrib", f"{PG_BIN}/pgbench"),
    ("pgbouncer", "/usr/sbin/pgbouncer"),
    ("pgpool2", "/usr/sbin/pgpool"),
    ("redis-server", "/usr/bin/redis-server"),
    ("redis-tools", "/usr/bin/redis-benchmark"),
    # pg_query's build runs bindgen, which loads libclang.
    ("libclang-dev", "/usr/lib/llvm-*/lib/libclang.so*"),
]


def debian_packages(log):
    missing = [pkg for pkg, path in DEBIAN if not glob.glob(path)]
    if not missing:
        log("packages: all present")
        return
    if os.geteuid() != 0:
        sys.exit(f"bench/run: missing {' '.join(missing)}; run as root to install them")
    log(f"packages: installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    # Debian may start packaged services on their default ports; we use our
    # own instances on free ports and leave those alone.


def matplotlib(log, allow_install=True):
    """True when matplotlib can be imported (installed with pip if needed)."""
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    if not allow_install:
        log("matplotlib: missing (--skip-install), the PNG chart is skipped")
        return False
    log("matplotlib: installing with pip (for the chart)")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
                       capture_output=True, text=True)
    importlib.invalidate_caches()
    if r.returncode != 0 or importlib.util.find_spec("matplotlib") is None:
        log("matplotlib: not available, the PNG chart is skipped\n" + r.stderr[-500:])
        return False
    return True


def target_dir(repo):
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")


def cargo_build(src, target_dir, what):
    """`cargo build --release -p pgstash` in `src` into `target_dir`; exits
    with the end of cargo's output when it fails."""
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    env = dict(os.environ, CARGO_TARGET_DIR=target_dir)
    r = subprocess.run([cargo, "build", "--release", "-p", "pgstash"], cwd=src, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        hint = ("\n(pg_query needs libclang: apt-get install libclang-dev)"
                if "libclang" in r.stderr else "")
        sys.exit(f"bench/run: cargo build of {what} failed:\n" + r.stderr[-3000:] + hint)


def build_pgstash(repo, log, skip=False):
    target = target_dir(repo)
    binary = os.path.join(target, "release", "pgstash")
    if skip and os.path.exists(binary):
        log(f"pgstash: using existing {binary}")
        return binary
    log("pgstash: cargo build --release -p pgstash")
    cargo_build(repo, target, "pgstash")
    return binary
