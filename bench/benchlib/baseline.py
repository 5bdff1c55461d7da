"""The baseline binary: a pgstash built from an older commit, measured in the
same run as the current one so that a change can be judged old vs new on the
same machine noise.

Every selected pgstash system gets a *twin* started from the baseline binary
under the key `<system>@base` (its own ports and, where it uses Redis, its own
key prefix; the same configuration otherwise). This module names the twins,
builds the baseline from a git revision, and identifies both binaries.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

from .install import cargo_build

SUFFIX = "@base"
WITHIN = 0.03        # a ratio within ±3% counts as "the same"


def twin(key):
    return key + SUFFIX


def is_twin(key):
    return key.endswith(SUFFIX)


def original(key):
    """The system a key measures: `pgstash_pass@base` -> `pgstash_pass`."""
    return key[:-len(SUFFIX)] if is_twin(key) else key


def twin_prefix(prefix):
    """The Redis key prefix of a twin: the system's own (pgstash's default is
    `pgstash:`) with `@base` before the colon, so the two binaries never
    share entries, table versions or invalidation channels."""
    return (prefix or "pgstash:").rstrip(":") + SUFFIX + ":"


def _git(repo, *args, check=True):
    r = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"bench/run: git {' '.join(args)} failed:\n{r.stderr.strip()}")
    return r.stdout.strip()


def build_from_rev(repo, rev, target_dir, log):
    """`cargo build --release -p pgstash` of `rev` in a temporary copy of the
    tree (`git archive`, so neither the work tree nor the repository's list
    of worktrees changes), with CARGO_TARGET_DIR=target_dir (kept between
    runs: later baseline builds only recompile pgstash's own crates).
    -> (path of the built binary, description). Exits on failure. The
    caller copies the binary before anything else builds into target_dir."""
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not commit:
        sys.exit(f"bench/run: --baseline-rev {rev!r} is not a commit of {repo}")
    short = _git(repo, "rev-parse", "--short=12", commit)
    subject = _git(repo, "log", "-1", "--format=%s", commit)
    src = tempfile.mkdtemp(prefix="pgstash-baseline-src-")
    try:
        archive = subprocess.Popen(["git", "-C", repo, "archive", "--format=tar", commit],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", src], stdin=archive.stdout,
                               capture_output=True, text=True)
        archive.stdout.close()
        err = archive.stderr.read().decode(errors="replace")
        if archive.wait() != 0 or untar.returncode != 0:
            sys.exit(f"bench/run: git archive {short} failed:\n{err}{untar.stderr}")
        first = not os.path.isdir(os.path.join(target_dir, "release"))
        log(f"baseline: cargo build --release -p pgstash of {short} ({subject[:60]}) "
            f"in {src}, CARGO_TARGET_DIR={target_dir}"
            + (" (a first build there: as long as any release build)" if first else ""))
        cargo_build(src, target_dir, f"the baseline ({short})")
        binary = os.path.join(target_dir, "release", "pgstash")
        if not os.path.exists(binary):
            sys.exit(f"bench/run: the baseline build of {short} left no {binary}")
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return binary, {"source": "rev", "rev": rev, "commit": commit, "short": short,
                    "subject": subject}


def check_binary(path):
    """`path --version` of a --baseline binary; exits when it is not one."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(f"bench/run: --baseline {path}: not an executable file")
    r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or "pgstash" not in r.stdout:
        sys.exit(f"bench/run: --baseline {path}: `--version` does not answer as pgstash "
                 f"({(r.stdout + r.stderr).strip()[:200]})")
    return r.stdout.strip()


def supports_replication(path):
    """Whether a pgstash binary knows `serve --replication` (older ones do
    not: their twins of the replication systems are not started)."""
    r = subprocess.run([path, "serve", "--help"], capture_output=True, text=True, timeout=30)
    return "--replication" in r.stdout


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verdict(ratio, higher_is_better):
    """'within' ±3%, else 'better' or 'worse' (None when not measured)."""
    if ratio is None:
        return None
    if abs(ratio - 1.0) <= WITHIN + 1e-9:
        return "within"
    return "better" if (ratio > 1.0) == higher_is_better else "worse"
