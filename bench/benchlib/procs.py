"""Processes and ports: every server the benchmark starts goes through a
`Supervisor`, which stops them all (newest first) however the run ends.

Children get their own session (so a Ctrl-C in the terminal reaches only
bench/run, which then stops them in order), a raised open-files limit (the
idle-connection test opens 10,000 sockets), and optionally the `postgres`
OS user (initdb, postgres and pgbouncer refuse to run as root).
"""

import os
import pwd
import resource
import signal
import socket
import subprocess
import time

NOFILE = 65536


def raise_nofile(limit=NOFILE):
    """Raise this process's open-files limit (we are root: the hard one too)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port, timeout=30.0, proc=None):
    """Wait until 127.0.0.1:port accepts a connection; False on timeout or
    when `proc` exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def as_user(user):
    """preexec_fn: raise the open-files limit, then drop to `user` (None: stay)."""
    ids = None
    if user is not None:
        pw = pwd.getpwnam(user)
        ids = (pw.pw_uid, pw.pw_gid, pw.pw_dir)

    def prep():
        raise_nofile()
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])

    return prep


def user_env(user):
    env = dict(os.environ)
    if user is not None:
        pw = pwd.getpwnam(user)
        env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user)
    return env


def run(cmd, user=None, check=True, timeout=600, **kw):
    """Run a command to completion, output captured (text). With check, a
    failure raises RuntimeError carrying the command's stderr."""
    r = subprocess.run(
        cmd, preexec_fn=as_user(user), env=kw.pop("env", user_env(user)),
        capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n"
                           f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def cpu_seconds(pid):
    """(user, system) CPU seconds one process has used so far, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_kb(pid):
    """Resident set size of one process, in KiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class Supervisor:
    """Owns every long-running process of the run and stops them all."""

    def __init__(self):
        self.procs = []   # (name, Popen, stop signal)
        self.stoppers = []  # (name, callable) for daemons like pg_ctl's postgres

    def spawn(self, name, cmd, log_path, user=None, stop_signal=signal.SIGTERM, cwd=None):
        log = open(log_path, "ab")
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=as_user(user), env=user_env(user), cwd=cwd,
            start_new_session=True)
        log.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def on_stop(self, name, fn):
        self.stoppers.append((name, fn))

    def stop_all(self, log=print):
        """Stop newest first: signal, wait up to 15 s, then SIGKILL the
        process group we created (only ever our own children's group)."""
        for name, proc, sig in reversed(self.procs):
            if proc.poll() is not None:
                continue
            try:
                proc.send_signal(sig)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log(f"  {name} (pid {proc.pid}) did not stop in 15 s: SIGKILL")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
            # Children left in its group (pgpool's workers) go too.
            try:
                os.killpg(proc.pid, 0)
                time.sleep(0.5)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()
        for name, fn in reversed(self.stoppers):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                log(f"  stopping {name} failed: {e}")
        self.stoppers.clear()
