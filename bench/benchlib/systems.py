"""The systems under test, each started on 127.0.0.1 on a free port inside
the run's temporary directory and registered with the Supervisor so it is
stopped at the end:

  direct         a throwaway Postgres 15 (initdb + pg_ctl, as OS user postgres),
                 `ssl = on` with a certificate of the run's own test CA: plain
                 and TLS clients both work (the plain systems say sslmode=disable)
  pgbouncer      PgBouncer, transaction pooling
  pgbouncer_tls  the same with TLS on both sides (client_tls_sslmode and
                 server_tls_sslmode = require)
  pgpool         pgpool-II, one primary, in-memory query cache in shared memory
  pgstash_pass   pgstash without rules (pure pooling pass-through)
  pgstash_tls    the same with TLS on both sides ([tls] required, upstream
                 sslmode=require)
  pgstash_pass1  the same with --workers 1 (a single-threaded runtime)
  pgstash_log0   the same as pgstash_pass, every query in the slow-query log
  pgstash_mem    pgstash with bench rules, in-process cache
  pgstash_mem_tls  the same with TLS on both sides
  pgstash_redis  pgstash with bench rules, cache in a throwaway redis-server
  pgstash_fast   the same in fast mode (local tier, pub/sub invalidation)
  pgstash_always pgstash_redis with `adaptive = false` on every rule: every
                 read is looked up, so its misses measure the miss path itself
  pgstash_repl   pgstash_mem + `--replication`: also invalidated from Postgres'
                 logical replication stream (writes that bypass pgstash)
  pgstash_redis_repl  pgstash_redis + `--replication` (its own Redis key prefix)
  pgstash_cluster  pgstash_redis on a local Redis Cluster (3 masters + replicas by default,
                 started by cluster.py) instead of the single redis-server
  pgstash_cluster_always  pgstash_always on the same Redis Cluster
  <pgstash_*>@base  with --baseline: the same system run from the baseline
                 binary (see baseline.py)

The unauthenticated-connections measurement (unauth.py) starts its own
pgstash and PgBouncer with SCRAM authentication, with start_pgstash and
start_pgbouncer below.

The generated configuration files are kept on the System so the report can
show exactly what was measured.
"""

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from . import procs

PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "postgres"   # OS user that owns the throwaway cluster, and its superuser
DB = "bench"
PUBLICATION = "pgstash"   # pgstash's [replication] publication (its default)


def owned_dir(path):
    """A directory the postgres OS user can write."""
    os.makedirs(path, exist_ok=True)
    pw = __import__("pwd").getpwnam(PG_USER)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


@dataclass
class System:
    key: str
    label: str
    port: int
    pid: int = None
    caching: bool = False            # has a query cache (warm-up runs before measuring)
    metrics_port: int = None         # pgstash only
    configs: dict = field(default_factory=dict)   # file name -> text
    log_path: str = None
    command: list = None
    proc: object = None              # the Popen, for systems started in the foreground
    replication: bool = False        # pgstash following the replication stream of DB
    sslmode: str = "disable"         # libpq's sslmode for pgbench against this system
    redis: object = None             # the cluster.Nodes of its Redis, for pgstash on Redis

    def exit_code(self):
        """None while running; the exit code once the process has ended."""
        if self.proc is not None:
            return self.proc.poll()
        try:
            os.kill(self.pid, 0)
            return None
        except ProcessLookupError:
            return "gone"

    def cache_counters(self, mode="simple"):
        """(hits, misses) so far, or None for systems without a readable cache.
        `mode` is the pgbench protocol of the run (pgpool counts differently)."""
        if self.metrics_port is not None:
            m = scrape_metrics(self.metrics_port)
            if m is None:
                return None
            return (m.get("pgstash_cache_hits_total", 0.0),
                    m.get("pgstash_cache_misses_total", 0.0))
        if self.key == "pgpool":
            c = pgpool_cache_counters(self.port)
            if c is None:
                return None
            hits, selects = c
            # Simple protocol: num_selects counts only the SELECTs sent to
            # Postgres. Extended protocol: every Execute, hit or not.
            return (hits, selects) if mode == "simple" else (hits, selects - hits)
        return None


def scrape_metrics(port):
    """Sum of every series of each metric family on pgstash's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            pass
    return out


def metric_series(port):
    """Every series on pgstash's /metrics, by its full name with labels as
    written (`name{label="value"}`), or None when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


CAUGHT_UP = f'pgstash_replication_caught_up{{database="{DB}"}}'
LAG = f'pgstash_replication_lag_seconds{{database="{DB}"}}'
LAG_BYPASS = 'pgstash_cache_bypass_total{reason="replication_lag"}'


def replication_state(port):
    """(caught up, lag in seconds or None, reads bypassed for replication lag
    so far) of a pgstash following DB's replication stream."""
    m = metric_series(port) or {}
    lag = m.get(LAG)
    return (m.get(CAUGHT_UP) == 1.0, None if lag in (None, float("inf")) else lag,
            m.get(LAG_BYPASS, 0.0))


def wait_caught_up(port, timeout=60.0):
    """Poll /metrics until `pgstash_replication_caught_up{database=DB}` is 1.
    -> seconds waited, or None when it was not within `timeout`."""
    started = time.monotonic()
    while True:
        if replication_state(port)[0]:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.1)


def psql(port, sql, db=DB, timeout=60):
    r = subprocess.run(
        [f"{PG_BIN}/psql", "-X", "-A", "-t", "-F", "|", "-h", "127.0.0.1", "-p", str(port),
         "-U", PG_USER, "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"psql on port {port}: {r.stderr.strip()}")
    return r.stdout.strip()


def pgpool_cache_counters(port):
    """pgpool's SHOW pool_cache: (num_cache_hits, num_selects). num_selects
    counts the SELECTs that went to Postgres (cache_hit_ratio = hits /
    (hits + selects))."""
    try:
        row = psql(port, "SHOW pool_cache", timeout=10).splitlines()[0].split("|")
        return float(row[0]), float(row[1])
    except (RuntimeError, IndexError, ValueError, subprocess.TimeoutExpired):
        return None


# ---------------------------------------------------------------- TLS

def make_certs(tmp):
    """A test CA and a server certificate for 127.0.0.1 / localhost signed by
    it (openssl CLI), in a directory the postgres OS user owns: Postgres and
    PgBouncer (both run as postgres) and pgstash (root) use the same files.
    -> {"ca": path, "cert": path, "key": path} (the key mode 0600, as Postgres
    demands)."""
    d = owned_dir(os.path.join(tmp, "tls"))

    def f(name):
        return os.path.join(d, name)

    with open(f("san.ext"), "w") as ext:
        ext.write("subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                  "basicConstraints = CA:FALSE\n"
                  "keyUsage = digitalSignature, keyEncipherment\n"
                  "extendedKeyUsage = serverAuth\n")
    procs.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
               "-subj", "/CN=pgstash bench test CA", "-keyout", f("ca.key"),
               "-out", f("ca.crt")])
    procs.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes",
               "-subj", "/CN=127.0.0.1", "-keyout", f("server.key"), "-out", f("server.csr")])
    procs.run(["openssl", "x509", "-req", "-in", f("server.csr"), "-CA", f("ca.crt"),
               "-CAkey", f("ca.key"), "-CAcreateserial", "-days", "3",
               "-extfile", f("san.ext"), "-out", f("server.crt")])
    pw = __import__("pwd").getpwnam(PG_USER)
    for name in os.listdir(d):
        os.chown(f(name), pw.pw_uid, pw.pw_gid)
        os.chmod(f(name), 0o600 if name.endswith(".key") else 0o644)
    return {"ca": f("ca.crt"), "cert": f("server.crt"), "key": f("server.key")}


# ---------------------------------------------------------------- Postgres

PG_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
max_connections = {max_connections}
shared_buffers = 256MB
# Throwaway cluster: commits need not wait for the disk, so update
# workloads measure the proxies rather than this machine's fsync.
synchronous_commit = off
max_wal_size = 4GB
# pgstash_repl and pgstash_redis_repl follow the logical replication stream
# (one temporary slot and one walsender each, baseline twins too). Logical
# decoding streams only flushed WAL: the direct-writes writer sets
# synchronous_commit = on in its own session (see direct_writes.py).
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
checkpoint_timeout = 30min
autovacuum = on
log_min_messages = warning
log_connections = off
# TLS for the *_tls systems (a certificate of the run's test CA); the
# plain systems connect with sslmode=disable.
ssl = on
ssl_cert_file = '{cert}'
ssl_key_file = '{key}'
"""


def start_postgres(sup, tmp, port, max_connections, certs):
    pgdata = owned_dir(os.path.join(tmp, "pgdata"))
    sockdir = owned_dir(os.path.join(tmp, "pgsock"))
    logdir = owned_dir(os.path.join(tmp, "pglog"))
    procs.run([f"{PG_BIN}/initdb", "-D", pgdata, "-U", PG_USER, "-A", "trust",
               "-E", "UTF8", "--locale=C", "--no-sync"], user=PG_USER, cwd=tmp)
    conf = PG_CONF.format(port=port, sockdir=sockdir, max_connections=max_connections,
                          cert=certs["cert"], key=certs["key"])
    with open(os.path.join(pgdata, "postgresql.conf"), "a") as f:
        f.write("\n# bench/run\n" + conf)
    log = os.path.join(logdir, "postgres.log")

    def stop():
        procs.run([f"{PG_BIN}/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "-t", "60", "stop"],
                  user=PG_USER, check=False, cwd=tmp)
        pidfile = os.path.join(pgdata, "postmaster.pid")
        if os.path.exists(pidfile):  # pg_ctl could not stop it: our postmaster, by pid
            with open(pidfile) as f:
                pid = int(f.readline())
            try:
                os.kill(pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass

    sup.on_stop("postgres", stop)
    procs.run([f"{PG_BIN}/pg_ctl", "-D", pgdata, "-l", log, "-w", "-t", "60", "start"],
              user=PG_USER, cwd=tmp)
    with open(os.path.join(pgdata, "postmaster.pid")) as f:
        pid = int(f.readline())
    procs.run([f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, DB])
    # What `pgstash replication setup` would create; harmless for the others.
    psql(port, f"CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES")
    conf += f"\n# and in database {DB}: CREATE PUBLICATION {PUBLICATION} FOR ALL TABLES"
    return System("direct", "Postgres (direct)", port, pid=pid,
                  configs={"postgresql.conf (appended)": conf.strip()}, log_path=log)


# ---------------------------------------------------------------- Redis

def start_redis(sup, tmp, port):
    d = os.path.join(tmp, "redis")
    os.makedirs(d, exist_ok=True)
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
           "--appendonly", "no", "--dir", d, "--protected-mode", "yes",
           "--maxmemory", "512mb", "--maxmemory-policy", "allkeys-lru"]
    log = os.path.join(d, "redis.log")
    p = sup.spawn("redis", cmd, log)
    if not procs.wait_port(port, 20, p):
        raise RuntimeError(f"redis-server did not start; see {log}")
    return p, " ".join(cmd[1:])


# ---------------------------------------------------------------- PgBouncer

PGBOUNCER_INI = """[databases]
* = host=127.0.0.1 port={pgport}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir = {dir}
auth_type = {auth_type}
auth_file = {dir}/userlist.txt
{tls}pool_mode = transaction
default_pool_size = {pool}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {max_clients}
max_db_connections = {pool}
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
client_login_timeout = {login_timeout}
"""

PGBOUNCER_PLAIN = "server_tls_sslmode = disable\n"
PGBOUNCER_TLS = """client_tls_sslmode = require
client_tls_cert_file = {cert}
client_tls_key_file = {key}
server_tls_sslmode = require
"""


def start_pgbouncer(sup, tmp, port, pgport, pool, max_clients, key="pgbouncer",
                    label="PgBouncer", certs=None, scram_user=None, login_timeout=60):
    """PgBouncer in transaction mode. With `certs`, TLS on both sides
    (clients must use it; server connections require it). With `scram_user`
    = (name, password), clients authenticate with SCRAM-SHA-256 (the password
    in clear in auth_file, as PgBouncer allows) instead of trust."""
    d = owned_dir(os.path.join(tmp, key))
    tls = PGBOUNCER_TLS.format(**certs) if certs else PGBOUNCER_PLAIN
    ini = PGBOUNCER_INI.format(pgport=pgport, port=port, dir=d, pool=pool,
                               max_clients=max_clients, tls=tls,
                               auth_type="scram-sha-256" if scram_user else "trust",
                               login_timeout=login_timeout)
    path = os.path.join(d, "pgbouncer.ini")
    with open(path, "w") as f:
        f.write(ini)
    with open(os.path.join(d, "userlist.txt"), "w") as f:
        f.write(f'"{PG_USER}" ""\n')
        if scram_user:
            f.write(f'"{scram_user[0]}" "{scram_user[1]}"\n')
    p = sup.spawn(key, ["pgbouncer", path], os.path.join(d, "stdout.log"), user=PG_USER)
    if not procs.wait_port(port, 20, p):
        raise RuntimeError(f"{key} did not start; see {d}/pgbouncer.log")
    configs = {"pgbouncer.ini": ini}
    if scram_user:
        configs["userlist.txt"] = f'"{PG_USER}" ""\n"{scram_user[0]}" "(its password)"'
    return System(key, label, port, pid=p.pid, configs=configs,
                  log_path=os.path.join(d, "pgbouncer.log"), proc=p,
                  sslmode="require" if certs else "disable")


# ---------------------------------------------------------------- pgpool-II

# Streaming-replication mode with a single primary (the usual deployment):
# in 'raw' mode pgpool-II 4.3.5 leaves an extended-protocol write inside an
# open transaction (ReadyForQuery 'T', the row not committed).
PGPOOL_CONF = """backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = {port}
socket_dir = '{dir}'
pcp_listen_addresses = ''
pcp_port = {pcp_port}
pcp_socket_dir = '{dir}'
wd_ipc_socket_dir = '{dir}'
backend_hostname0 = '127.0.0.1'
backend_port0 = {pgport}
backend_weight0 = 1
backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'
enable_pool_hba = off
pool_passwd = ''
ssl = off
# pgpool-II has one process (and one server connection) per client: it
# needs at least as many children as the benchmark's largest client count.
num_init_children = {children}
max_pool = 1
reserved_connections = 0
child_life_time = 0
child_max_connections = 0
connection_life_time = 0
client_idle_limit = 0
connection_cache = on
listen_backlog_multiplier = 4
load_balance_mode = off
sr_check_period = 0
health_check_period = 0
failover_on_backend_error = off
use_watchdog = off
log_destination = 'stderr'
logging_collector = off
log_min_messages = warning
pid_file_name = '{dir}/pgpool.pid'
logdir = '{dir}'
memory_cache_enabled = on
memqcache_method = 'shmem'
memqcache_total_size = 256MB
memqcache_max_num_cache = 1000000
memqcache_expire = {ttl}
memqcache_auto_cache_invalidation = on
memqcache_maxcache = 2MB
memqcache_cache_block_size = 4MB
memqcache_oiddir = '{dir}/oiddir'
"""


def start_pgpool(sup, tmp, port, pcp_port, pgport, children, ttl):
    d = owned_dir(os.path.join(tmp, "pgpool"))
    conf = PGPOOL_CONF.format(port=port, pcp_port=pcp_port, pgport=pgport, dir=d,
                              children=children, ttl=ttl)
    path = os.path.join(d, "pgpool.conf")
    with open(path, "w") as f:
        f.write(conf)
    pcp = os.path.join(d, "pcp.conf")
    open(pcp, "w").close()
    log = os.path.join(d, "pgpool.log")
    # -n: stay in the foreground; -D: forget any saved backend status.
    # SIGINT is pgpool's "fast" shutdown.
    p = sup.spawn("pgpool", ["pgpool", "-n", "-D", "-f", path, "-F", pcp], log,
                  user=PG_USER, stop_signal=signal.SIGINT)
    if not procs.wait_port(port, 30, p):
        raise RuntimeError(f"pgpool did not start; see {log}")
    # The listener is up before every child is forked; wait for a query.
    deadline = time.monotonic() + 30
    while True:
        try:
            psql(port, "SELECT 1", timeout=10)
            break
        except (RuntimeError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return System("pgpool", "pgpool-II (query cache)", port, pid=p.pid, caching=True,
                  configs={"pgpool.conf": conf}, log_path=log, proc=p)


# ---------------------------------------------------------------- pgstash

def start_pgstash(sup, tmp, binary, key, label, port, mport, pgport, pool,
                  rules=None, redis_url=None, log_all=False, fast=False, workers=None,
                  prefix=None, replication=False, tls=None, extra_config=None):
    """One pgstash. `tls`: the certificate files of make_certs: TLS required
    of clients ([tls]) and upstream sslmode=require; without it the upstream
    is plain (sslmode=disable: the bench Postgres offers TLS, and pgstash's
    default, prefer, would take it). `extra_config`: more pgstash.toml."""
    d = os.path.join(tmp, key)
    os.makedirs(d, exist_ok=True)
    cmd = [binary, "serve"]
    config = None
    if fast or prefix:
        # The consistency mode is a config-file key. A key prefix of its own
        # keeps a system's entries apart from the others' in the shared Redis.
        config = ("[cache]\n" + ('mode = "fast"\n' if fast else "")
                  + (f'key_prefix = "{prefix}"\n' if prefix else ""))
    if replication:
        # --replication below; the benchmark's database is not the upstream
        # URL's (it has none), so it is named here. max_lag: the default.
        config = (config or "") + (f'[replication]\ndatabases = ["{DB}"]\n'
                                   f'publication = "{PUBLICATION}"\nmax_lag = "500ms"\n')
    if tls:
        config = (config or "") + (f'[tls]\ncert_file = "{tls["cert"]}"\n'
                                   f'key_file = "{tls["key"]}"\nrequired = true\n')
    if extra_config:
        config = (config or "") + extra_config
    if config:
        path = os.path.join(d, "pgstash.toml")
        with open(path, "w") as f:
            f.write(config)
        cmd += ["--config", path]
    cmd += ["--listen", f"127.0.0.1:{port}",
           "--upstream", f"postgres://{PG_USER}@127.0.0.1:{pgport}"
           f"?sslmode={'require' if tls else 'disable'}",
           "--metrics-listen", f"127.0.0.1:{mport}",
           "--pool-size", str(pool), "--pool-mode", "transaction",
           "--slow-query-ms", "0" if log_all else "100000"]
    if log_all:
        cmd += ["--slow-query-log", os.path.join(d, "slow.log")]
    if workers:
        cmd += ["--workers", str(workers)]
    if rules:
        cmd += ["--rules", rules]
    if redis_url:
        cmd += ["--redis", redis_url]
    if replication:
        cmd.append("--replication")
    log = os.path.join(d, "pgstash.log")
    p = sup.spawn(key, cmd, log, cwd=d)
    if not procs.wait_port(port, 30, p):
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-5:]).strip()
        raise RuntimeError(f"{key} did not start ({' '.join(cmd)}); its log ends:\n{tail}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    shown = [c if not c.startswith(tmp) else os.path.basename(c) for c in cmd]
    shown[0] = "pgstash"
    configs = {"command": " ".join(shown)}
    if config:
        configs["pgstash.toml"] = config.replace(tmp + "/", "")
    return System(key, label, port, pid=p.pid, caching=bool(rules), metrics_port=mport,
                  configs=configs, log_path=log, command=cmd, proc=p,
                  replication=replication, sslmode="require" if tls else "disable")


def describe(systems):
    return {s.key: {"label": s.label, "configs": s.configs} for s in systems}


def copy_logs(systems, dest):
    """Keep each system's log next to the results (the temp dir is removed)."""
    os.makedirs(dest, exist_ok=True)
    for s in systems:
        if s.log_path and os.path.exists(s.log_path):
            shutil.copy(s.log_path, os.path.join(dest, f"{s.key}.log"))
