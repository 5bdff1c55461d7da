#!/usr/bin/env python3
"""Writes the hand-made seed corpus of pgstash's fuzz targets.

Run from the repository root: `python3 fuzz/seeds.py`. Each seed lands in
fuzz/corpus/<target>/seed-<name>; files a fuzzing run found (regressions)
are named otherwise and left alone. Input formats are those documented in
proxy/src/fuzzing.rs. The shapes behind known proxy CVEs are named after
them (see fuzz/corpus/README.md).
"""

import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def i16(n):
    return struct.pack(">h", n)


def i32(n):
    return struct.pack(">i", n)


def u32(n):
    return struct.pack(">I", n)


def i64(n):
    return struct.pack(">q", n)


def msg(tag, body):
    """A regular message: type byte, length counting itself, body."""
    return tag + i32(len(body) + 4) + body


def raw_len(tag, length, body=b""):
    """A message whose length field is `length` (u32 bits), whatever follows."""
    return tag + u32(length & 0xFFFFFFFF) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- client
def query(sql):
    return msg(b"Q", cstr(sql))


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + i16(len(types)) + b"".join(i32(t) for t in types))


def bind(portal, stmt, values=(), formats=(), result_formats=()):
    body = cstr(portal) + cstr(stmt) + i16(len(formats)) + b"".join(i16(f) for f in formats)
    body += i16(len(values))
    for v in values:
        body += i32(-1) if v is None else i32(len(v)) + v
    body += i16(len(result_formats)) + b"".join(i16(f) for f in result_formats)
    return msg(b"B", body)


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def execute(portal="", rows=0):
    return msg(b"E", cstr(portal) + i32(rows))


def close(kind, name):
    return msg(b"C", kind + cstr(name))


SYNC = msg(b"S", b"")
FLUSH = msg(b"H", b"")
TERMINATE = msg(b"X", b"")

NONCE = b"rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF"


def sasl_initial(data, mechanism=b"SCRAM-SHA-256", length=None):
    length = len(data) if length is None else length
    return msg(b"p", cstr(mechanism) + i32(length) + data)


def client_first(nonce=NONCE, header=b"n,,"):
    return header + b"n=,r=" + nonce


CLIENT_FINAL = (
    b"c=biws,r=" + NONCE + b"3rfcNHYJY1ZVvWVs7j,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)

# ---------------------------------------------------------------- backend
ROW_DESCRIPTION = msg(
    b"T", i16(1) + cstr("id") + i32(16384) + i16(1) + i32(23) + i16(4) + i32(-1) + i16(0)
)


def data_row(*values):
    body = i16(len(values))
    for v in values:
        body += i32(-1) if v is None else i32(len(v)) + v
    return msg(b"D", body)


def error(fields, tag=b"E"):
    return msg(tag, b"".join(k + cstr(v) for k, v in fields) + b"\0")


def auth(code, rest=b""):
    return msg(b"R", i32(code) + rest)


def ready(status=b"I"):
    return msg(b"Z", status)


def startup_packet(params, version=196608):
    body = i32(version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return i32(len(body) + 4) + body


def main():
    select_unit = parse("", "SELECT * FROM t WHERE id = $1", [23]) + bind("", "", [b"1"]) + \
        describe(b"P", "") + execute() + SYNC
    # frame_reader: control byte (bit 7: server reader; low 5 bits + 1:
    # size of the pieces), then the bytes.
    client_stream = query("select 1") + select_unit + TERMINATE
    server_stream = ROW_DESCRIPTION + data_row(b"1") + msg(b"C", cstr("SELECT 1")) + ready()
    fr = "frame_reader"
    write(fr, "client-bytewise", b"\x00" + client_stream)
    write(fr, "client-32", b"\x1f" + client_stream)
    write(fr, "server-7", b"\x86" + server_stream)
    write(fr, "server-32", b"\x9f" + server_stream)
    write(fr, "empty-body-sync", b"\x04" + SYNC * 3)
    write(fr, "unknown-client-type", b"\x1f" + msg(b"Z", b"I"))
    # Length overflow (PgBouncer CVE-2026-6664 shape): lengths near
    # i32::MAX, negative, and below the 4 bytes of the length itself.
    for name, length in [("i32max", 0x7FFFFFFF), ("i32max-3", 0x7FFFFFFC),
                         ("negative", 0x80000000), ("minus1", 0xFFFFFFFF),
                         ("three", 3), ("zero", 0), ("limit-plus1", 64 * 1024 * 1024)]:
        write(fr, "cve-2026-6664-client-len-" + name, b"\x1f" + raw_len(b"p", length, b"x" * 16))
        write(fr, "cve-2026-6664-server-len-" + name, b"\x9f" + raw_len(b"D", length, b"x" * 16))

    # startup
    st = "startup"
    app = [("user", "app"), ("database", "shop"), ("application_name", "fuzz"),
           ("options", "-c search_path=a,b --work_mem=64MB -c\\ x=y -cstatement_timeout=5s"),
           ("DateStyle", "ISO, MDY"), ("role", "r"), ("_pq_.compression", "on")]
    write(st, "startup", startup_packet(app))
    write(st, "ssl-then-startup", i32(8) + i32(80877103) + startup_packet(app[:2]))
    write(st, "gssenc-then-startup", i32(8) + i32(80877104) + startup_packet(app[:2]))
    write(st, "cancel", i32(16) + i32(80877102) + i32(1234) + i32(5678))
    write(st, "cancel-short", i32(12) + i32(80877102) + i32(1234))
    write(st, "protocol-3.2", startup_packet(app[:2], version=196610))
    write(st, "protocol-2", startup_packet(app[:2], version=131072))
    write(st, "unterminated-params", i32(20) + i32(196608) + b"user\0appdata")
    write(st, "key-without-value", i32(17) + i32(196608) + b"user\0\0\0")
    for name, length in [("i32max", 0x7FFFFFFF), ("negative", 0x80000000),
                         ("minus1", 0xFFFFFFFF), ("seven", 7), ("four", 4),
                         ("over-limit", 10001), ("at-limit", 10000)]:
        write(st, "cve-2026-6664-len-" + name, u32(length) + i32(196608) + b"user\0a\0\0")

    # client_messages
    cm = "client_messages"
    write(cm, "simple-query", query("SELECT * FROM t WHERE id = 1") + TERMINATE)
    write(cm, "unnamed-unit", select_unit)
    write(cm, "named-statement", parse("s1", "SELECT name FROM users WHERE id = $1", [23]) + SYNC +
          bind("", "s1", [b"7"]) + execute() + SYNC + bind("", "s1", [None]) + execute() + SYNC +
          close(b"S", "s1") + SYNC)
    write(cm, "reuse-unnamed", select_unit + bind("", "", [b"2"]) + execute() + SYNC)
    write(cm, "describe-statement", parse("s2", "SELECT 1") + describe(b"S", "s2") + FLUSH + SYNC)
    write(cm, "portal-rows", bind("p1", "s1", [b"x"], [0], [1]) + execute("p1", 10) + close(b"P", "p1") + SYNC)
    write(cm, "binary-params", parse("", "SELECT $1::int8", [20]) +
          bind("", "", [i64(5)], [1], [1]) + execute() + SYNC)
    write(cm, "time-sensitive-param", parse("", "SELECT * FROM t WHERE ts < $1", [1184]) +
          bind("", "", [b"now"]) + execute() + SYNC)
    write(cm, "bind-negative-counts", msg(b"B", b"\0\0" + i16(-1) + i16(-5)) + SYNC)
    write(cm, "bind-value-len-i32max", msg(b"B", b"\0\0" + i16(0) + i16(1) + i32(0x7FFFFFFF) + b"ab") + SYNC)
    write(cm, "bind-value-len-minus2", msg(b"B", b"\0\0" + i16(0) + i16(1) + i32(-2)) + SYNC)
    write(cm, "bind-formats-mismatch", msg(b"B", b"\0\0" + i16(2) + i16(0) + i16(1) + i16(3) +
                                           i32(1) + b"a" + i32(1) + b"b" + i32(1) + b"c") + SYNC)
    write(cm, "bind-format-count-i16max", msg(b"B", b"\0\0" + i16(32767) + i16(0)) + SYNC)
    write(cm, "parse-types-negative", msg(b"P", b"\0select 1\0" + i16(-1)) + SYNC)
    write(cm, "parse-types-overclaim", msg(b"P", b"\0select 1\0" + i16(32767) + i32(23)) + SYNC)
    write(cm, "parse-unterminated", msg(b"P", b"s1\0select 1") + SYNC)
    write(cm, "describe-bad-kind", msg(b"D", b"Xname\0") + msg(b"D", b"") + SYNC)
    write(cm, "execute-short", msg(b"E", b"\0\0\0") + SYNC)
    write(cm, "close-unterminated", msg(b"C", b"Sname") + SYNC)
    write(cm, "copy-and-function-call", msg(b"d", b"1\t2\n") + msg(b"c", b"") + msg(b"f", cstr("no")) +
          msg(b"F", i32(1) + i16(0) + i16(0) + i16(0)) + SYNC)
    write(cm, "sasl-initial", sasl_initial(client_first()))
    write(cm, "sasl-initial-len-i32max", sasl_initial(client_first(), length=0x7FFFFFFF))
    write(cm, "sasl-initial-len-minus2", sasl_initial(client_first(), length=-2))
    write(cm, "md5-password", msg(b"p", cstr("md5" + "0" * 32)))
    # pgpool CVE-2024-45624 shape: a role change then a cacheable read of
    # the same statement, in one stream (see corpus/README.md).
    write(cm, "cve-2024-45624-set-role-then-read", query("SET ROLE other") + select_unit +
          query("SET SESSION AUTHORIZATION other") + select_unit)

    # backend_messages
    bm = "backend_messages"
    write(bm, "select-answer", server_stream)
    write(bm, "two-rows-null", ROW_DESCRIPTION + data_row(b"1", None) + data_row(b"", b"abc") +
          msg(b"C", cstr("SELECT 2")) + ready(b"T"))
    write(bm, "extended-answer", msg(b"1", b"") + msg(b"2", b"") + ROW_DESCRIPTION + data_row(b"1") +
          msg(b"C", cstr("SELECT 1")) + msg(b"3", b"") + ready())
    full_error = [(b"S", "ERROR"), (b"V", "ERROR"), (b"C", "26000"),
                  (b"M", 'prepared statement "pgstash_0123" does not exist'),
                  (b"F", "prepare.c"), (b"L", "454"), (b"R", "FetchPreparedStatement")]
    write(bm, "error-full", msg(b"1", b"") + error(full_error) + ready())
    write(bm, "notice-and-status", error([(b"S", "NOTICE"), (b"C", "00000"), (b"M", "hi")], b"N") +
          msg(b"S", cstr("TimeZone") + cstr("UTC")) + msg(b"A", i32(1) + cstr("chan") + cstr("payload")))
    # ErrorResponse without SQLSTATE (PgBouncer CVE-2026-6666 shape), and
    # with fields that never end.
    write(bm, "cve-2026-6666-error-no-sqlstate", error([(b"S", "FATAL"), (b"M", "no code")]) + ready())
    write(bm, "cve-2026-6666-notice-no-sqlstate", error([(b"S", "WARNING"), (b"M", "x")], b"N"))
    write(bm, "cve-2026-6666-error-unterminated-field", msg(b"E", b"SFATAL\0CXX000\0Mno end"))
    write(bm, "cve-2026-6666-error-empty", msg(b"E", b"") + msg(b"E", b"\0") + msg(b"E", b"C"))
    write(bm, "parameter-status-broken", msg(b"S", b"name-only") + msg(b"S", b"name\0") + msg(b"S", b""))
    write(bm, "data-row-lies", data_row() + msg(b"D", i16(-1)) + msg(b"D", i16(32767) + i32(1) + b"a") +
          msg(b"D", i16(1) + i32(0x7FFFFFFF) + b"abc") + msg(b"D", i16(2) + i32(-1) + i32(-7)) + msg(b"D", b"\0"))
    write(bm, "command-complete-odd", msg(b"C", cstr("INSERT 0 99999999999999999999")) + msg(b"C", b"") +
          msg(b"C", cstr("SELECT -1")) + msg(b"C", b"UPDATE 5"))
    write(bm, "backend-key-short", msg(b"K", i32(1)) + msg(b"Z", b""))
    write(bm, "cve-2026-6664-len-i32max", raw_len(b"D", 0x7FFFFFFF, b"x" * 8))
    write(bm, "cve-2026-6664-len-negative", raw_len(b"E", 0x80000000, b"SFATAL\0"))

    # scram_server: the client's password messages.
    ss = "scram_server"
    write(ss, "exchange", sasl_initial(client_first()) + msg(b"p", CLIENT_FINAL))
    write(ss, "channel-binding-requested", sasl_initial(client_first(header=b"p=tls-server-end-point,,")) +
          msg(b"p", CLIENT_FINAL))
    write(ss, "channel-binding-y", sasl_initial(client_first(header=b"y,,")) + msg(b"p", CLIENT_FINAL))
    write(ss, "authzid", sasl_initial(client_first(header=b"n,a=admin,")) + msg(b"p", CLIENT_FINAL))
    write(ss, "no-nonce", sasl_initial(b"n,,n=,") + msg(b"p", CLIENT_FINAL))
    write(ss, "bad-final", sasl_initial(client_first()) + msg(b"p", b"c=biws,r=x,p=!!notbase64"))
    write(ss, "final-no-proof", sasl_initial(client_first()) + msg(b"p", b"c=biws,r=" + NONCE))
    write(ss, "non-utf8-nonce", sasl_initial(client_first(nonce=b"\xff\xfe\x80abc")) + msg(b"p", CLIENT_FINAL))
    write(ss, "other-mechanism", sasl_initial(client_first(), mechanism=b"SCRAM-SHA-256-PLUS"))
    # Oversized client nonce (PgBouncer CVE-2026-6665 shape).
    write(ss, "cve-2026-6665-nonce-20k", sasl_initial(client_first(nonce=b"A" * 20000)) + msg(b"p", CLIENT_FINAL))
    write(ss, "cve-2026-6665-nonce-3k", sasl_initial(client_first(nonce=b"x" * 3000)) +
          msg(b"p", b"c=biws,r=" + b"x" * 3000 + b",p=" + b"A" * 44))
    # Length overflow inside SASLInitialResponse (CVE-2026-6664 shape).
    write(ss, "cve-2026-6664-sasl-len-i32max", sasl_initial(client_first(), length=0x7FFFFFFF))
    write(ss, "cve-2026-6664-sasl-len-negative", sasl_initial(client_first(), length=-0x80000000))
    write(ss, "cve-2026-6664-sasl-len-minus1", sasl_initial(b"", length=-1) + msg(b"p", CLIENT_FINAL))

    # scram_client: the server's Authentication requests.
    sc = "scram_client"
    server_first = b"r=" + NONCE + b"3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    write(sc, "scram", auth(10, cstr("SCRAM-SHA-256") + b"\0") + auth(11, server_first) +
          auth(12, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") + auth(0))
    write(sc, "scram-plus-only", auth(10, cstr("SCRAM-SHA-256-PLUS") + b"\0"))
    write(sc, "scram-unterminated-list", auth(10, b"SCRAM-SHA-256"))
    write(sc, "continue-before-sasl", auth(11, server_first))
    write(sc, "final-before-sasl", auth(12, b"v=abc"))
    write(sc, "md5", auth(5, b"\x01\x02\x03\x04") + auth(0))
    write(sc, "md5-short-salt", auth(5, b"\x01\x02"))
    write(sc, "cleartext", auth(3) + auth(0))
    write(sc, "unsupported-kerberos", auth(2))
    write(sc, "empty-request", msg(b"R", b""))
    write(sc, "server-error-e", auth(10, cstr("SCRAM-SHA-256") + b"\0") + auth(11, b"e=other-error"))
    write(sc, "error-during-auth", error([(b"S", "FATAL"), (b"C", "28P01"), (b"M", "password authentication failed")]))
    write(sc, "cve-2026-6666-error-no-sqlstate", error([(b"S", "FATAL"), (b"M", "no code")]))
    # Server-first with an oversized nonce (CVE-2026-6665 shape, client side).
    write(sc, "cve-2026-6665-server-nonce-20k", auth(10, cstr("SCRAM-SHA-256") + b"\0") +
          auth(11, b"r=" + b"N" * 20000 + b",s=QSXCR+Q6sek8bf92,i=4096"))
    write(sc, "server-first-bad-salt", auth(10, cstr("SCRAM-SHA-256") + b"\0") +
          auth(11, b"r=" + NONCE + b",s=!!!,i=-1"))
    write(sc, "cve-2026-6664-len-i32max", raw_len(b"R", 0x7FFFFFFF, i32(10)))

    # rules_toml
    rt = "rules_toml"
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, path in [("deploy", "deploy/rules.toml"), ("bench", "bench/workloads/rules.toml")]:
        with open(os.path.join(here, path), "rb") as f:
            write(rt, name, f.read())
    write(rt, "every-matcher", b'''[defaults]
ttl = "30s"
max_entry_bytes = 4096
[[rule]]
name = "by-query"
query = "SELECT * FROM products WHERE id = 1"
ttl = "1h 30m"
invalidate_on = ["stock", "public.prices"]
[[rule]]
name = "by-tables"
tables = ["products", "shop.orders"]
shared = true
allow_rls = true
[[rule]]
name = "by-fingerprint"
fingerprint = "0000000000000000000000000000000000000000000000000000000000000000"
enabled = false
''')
    write(rt, "bad-values", b'''[defaults]
ttl = "-5s"
[[rule]]
name = "x"
query = "SELECT 1; SELECT 2"
ttl = "99999999999999999999h"
max_entry_bytes = 18446744073709551616
[[rule]]
name = "x"
fingerprint = "zz"
tables = ["a.b.c", ""]
''')
    write(rt, "not-toml", b"[[rule]\nname = \"unclosed\nquery = '''\n")
    write(rt, "deep-arrays", b"a = " + b"[" * 200 + b"]" * 200 + b"\n")
    write(rt, "deep-tables", b"x = " + b"{a = " * 100 + b"1" + b"}" * 100 + b"\n")

    # sql
    sq = "sql"
    for i, text in enumerate([
        "SELECT * FROM t WHERE id = 1",
        "select u.name, count(*) from users u join orders o on o.user_id = u.id "
        "where u.id in (1,2,3) group by 1 order by 2 desc limit 10",
        "WITH x AS (DELETE FROM a RETURNING *) SELECT * FROM x",
        "INSERT INTO t VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET v = excluded.v RETURNING id",
        "UPDATE products SET price = price * 1.1 WHERE id = $1",
        "MERGE INTO t USING b ON t.id = b.id WHEN MATCHED THEN DELETE",
        "SELECT now(), 'now'::timestamptz, current_date, random()",
        "SELECT * FROM pg_catalog.pg_class",
        "SELECT * FROM t FOR UPDATE SKIP LOCKED",
        "SELECT * INTO TEMP x FROM t",
        "CREATE TEMP TABLE tt (id int); SELECT * FROM pg_temp.tt",
        "BEGIN; SELECT 1; COMMIT",
        "PREPARE p AS SELECT $1; EXECUTE p(1); DEALLOCATE p",
        "LISTEN chan; NOTIFY chan, 'x'",
        "COPY t FROM STDIN",
        "DO $$BEGIN PERFORM 1; END$$",
        "SELECT $tag$ it's $ quoted $tag$, E'\\x41\\n', U&'\\0041', B'101', X'ff'",
        "SELECT 1 /* nested /* comment */ still */ + 2 -- tail",
        "SELECT * FROM \"Mixed Case\".\"Table\" WHERE \"col\" = 'v'",
        "SELECT pg_advisory_lock(1)",
        "SELECT * FROM t WHERE a = ANY($1::int[]) AND b BETWEEN 1 AND 2",
        "TABLE t", "VALUES (1), (2)", "", ";", "SELECT 'unterminated",
        "EXPLAIN ANALYZE DELETE FROM t",
        "SELECT set_config('search_path', 'x', false)",
        "SET LOCAL work_mem = '64MB'", "RESET ALL", "DISCARD ALL",
        "select * from a where x = (select max(y) from b where b.id = a.id)",
    ]):
        write(sq, "stmt-%02d" % i, text.encode())
    write(sq, "deep-parens", b"SELECT " + b"(" * 3000 + b"1" + b")" * 3000)
    write(sq, "deep-subselects", b"SELECT " + b"(SELECT " * 200 + b"1" + b")" * 200)
    write(sq, "long-in-list", b"SELECT * FROM t WHERE id IN (" + b",".join(b"%d" % i for i in range(2000)) + b")")
    write(sq, "non-utf8", b"SELECT '\xff\xfe' FROM t WHERE x = '\xc3'")
    write(sq, "nul-inside", b"SELECT 1\0; DROP TABLE t")
    # pgpool CVE-2024-45624 shape: the role changes that must keep a
    # session's reads out of a cache shared with other roles, in the
    # spellings a client can hide them in.
    for i, text in enumerate([
        "SET ROLE admin; SELECT * FROM t WHERE id = 1",
        "set session authorization 'other'",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET ROLE", "reset session authorization",
        "SELECT set_config('role', 'admin', false), * FROM t",
        "select pg_catalog.set_config('ROLE', 'x', true)",
        "/* hi */ SeT /* there */ RoLe \"Admin\"",
        "SET LOCAL ROLE admin",
        "SELECT * FROM rls_protected WHERE owner = current_user",
    ]):
        write(sq, "cve-2024-45624-%02d" % i, text.encode())

    # replication: CopyData payloads.
    rp = "replication"

    def xlog(m):
        return b"w" + i64(0x16B3748) + i64(0x16B3800) + i64(0) + m

    write(rp, "begin", xlog(b"B" + i64(0x16B3800) + i64(0) + i32(741)))
    write(rp, "commit", xlog(b"C" + b"\0" + i64(1) + i64(2) + i64(0)))
    write(rp, "relation", xlog(b"R" + i32(16384) + cstr("public") + cstr("t") + b"d" + i16(0)))
    write(rp, "insert", xlog(b"I" + i32(16384) + b"N" + i16(0)))
    write(rp, "update", xlog(b"U" + i32(16384) + b"N" + i16(0)))
    write(rp, "delete", xlog(b"D" + i32(16384) + b"K" + i16(0)))
    write(rp, "truncate", xlog(b"T" + i32(2) + b"\0" + i32(16384) + i32(16390)))
    write(rp, "truncate-count-i32max", xlog(b"T" + i32(0x7FFFFFFF) + b"\0" + i32(1)))
    write(rp, "truncate-count-negative", xlog(b"T" + i32(-1) + b"\0"))
    write(rp, "message", xlog(b"M" + b"\x01" + i64(5) + cstr("pgstash") + i32(3) + b"abc"))
    write(rp, "message-len-i32max", xlog(b"M" + b"\x00" + i64(5) + cstr("p") + i32(0x7FFFFFFF) + b"abc"))
    write(rp, "message-len-negative", xlog(b"M" + b"\x00" + i64(5) + cstr("p") + i32(-3)))
    write(rp, "message-no-prefix-end", xlog(b"M" + b"\x00" + i64(5) + b"prefix"))
    write(rp, "keepalive", b"k" + i64(0x16B3800) + i64(0) + b"\x01")
    write(rp, "keepalive-short", b"k" + i64(1))
    write(rp, "origin-and-type", xlog(b"O" + i64(1) + cstr("origin")) + b"")
    write(rp, "xlog-short", b"w" + i64(1))


if __name__ == "__main__":
    main()
