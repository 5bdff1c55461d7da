"""A tiny blocking PostgreSQL client, stdlib only: startup with trust
authentication, the simple protocol (`simple`) and the extended protocol
with an unnamed statement (`extended`: Parse/Bind/Execute/Sync in one
write, as a driver sends it and as `pgbench -M extended` does). Enough for
the direct-writes workload's writer and readers, with no driver to install
and little per-query overhead (each call is one send and the reads of the
answer). Values come back as text (str) or None for NULL."""

import socket
import struct

PROTOCOL_3 = 196608


class PgError(Exception):
    """An ErrorResponse from the server (the connection is still usable)."""


def _cstr(s):
    return s.encode() + b"\0"


def _msg(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


SYNC = b"S\0\0\0\4"


class Conn:
    def __init__(self, host, port, user, database, timeout=10.0, application_name=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=65536)
        params = _cstr("user") + _cstr(user) + _cstr("database") + _cstr(database)
        if application_name:
            params += _cstr("application_name") + _cstr(application_name)
        params += b"\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(params), PROTOCOL_3) + params)
        while True:
            kind, body = self._read()
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise PgError("the server asked for a password (trust expected)")
            if kind == b"E":
                raise PgError(_error_text(body))
            if kind == b"Z":
                return

    def _read(self):
        header = self.rfile.read(5)
        if len(header) < 5:
            raise ConnectionError("connection closed by the server")
        length = struct.unpack("!i", header[1:])[0]
        body = self.rfile.read(length - 4)
        if len(body) < length - 4:
            raise ConnectionError("connection closed by the server")
        return header[:1], body

    def _result(self):
        """Reads up to ReadyForQuery: the rows of the (last) result."""
        rows, error = [], None
        while True:
            kind, body = self._read()
            if kind == b"D":
                n = struct.unpack("!h", body[:2])[0]
                pos, row = 2, []
                for _ in range(n):
                    size = struct.unpack("!i", body[pos:pos + 4])[0]
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(body[pos:pos + size].decode())
                        pos += size
                rows.append(row)
            elif kind == b"E":
                error = _error_text(body)
            elif kind == b"Z":
                if error:
                    raise PgError(error)
                return rows
            # 1 2 C T n N S: nothing to keep

    def simple(self, sql):
        """One simple-protocol query (autocommit unless inside BEGIN)."""
        self.sock.sendall(_msg(b"Q", _cstr(sql)))
        return self._result()

    def extended(self, sql, params=()):
        """Parse/Bind/Execute/Sync of an unnamed statement, parameters as text."""
        bind = b"\0\0" + struct.pack("!hh", 0, len(params))
        for p in params:
            b = str(p).encode()
            bind += struct.pack("!i", len(b)) + b
        bind += struct.pack("!h", 0)
        self.sock.sendall(_msg(b"P", b"\0" + _cstr(sql) + b"\0\0") + _msg(b"B", bind)
                          + _msg(b"E", b"\0\0\0\0\0") + SYNC)
        return self._result()

    def close(self):
        try:
            self.sock.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        try:
            self.rfile.close()
            self.sock.close()
        except OSError:
            pass


def _error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')}"
