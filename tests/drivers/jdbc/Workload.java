// pgstash driver check: real JDBC workloads with Debian's pgjdbc, run the same
// against Postgres directly and through pgstash by tests/drivers/run.
// Each check prints "ok <name>" or "not ok <name> # <reason>"; the last line is
// "N passed, N failed". Usage: java Workload <jdbc-url-without-params> <user>
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.largeobject.LargeObject;
import org.postgresql.largeobject.LargeObjectManager;

public class Workload {
    interface Check { void run() throws Exception; }

    static String base;
    static String user;
    static int passed = 0, failed = 0;

    static Connection connect(String params) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        String url = base + (params.isEmpty() ? "" : "?" + params);
        return DriverManager.getConnection(url, p);
    }

    static void expect(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static final ExecutorService runner = Executors.newCachedThreadPool(r -> {
        Thread t = new Thread(r);
        t.setDaemon(true);
        return t;
    });

    static void check(String name, Check c) {
        try {
            // a hang is a failure, not a stuck run
            Future<Object> f = runner.submit(() -> { c.run(); return null; });
            try {
                f.get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                throw e.getCause();
            } catch (TimeoutException e) {
                f.cancel(true);
                throw new AssertionError("no answer in 30 s");
            }
            passed++;
            System.out.println("ok " + name);
        } catch (Throwable t) {
            failed++;
            String msg = String.valueOf(t).replace('\n', ' ');
            System.out.println("not ok " + name + " # " + msg);
        }
    }

    public static void main(String[] args) throws Exception {
        base = args[0];
        user = args[1];
        try (Connection c = connect("")) {
            c.createStatement().execute(
                "DROP TABLE IF EXISTS jdbc_items; CREATE TABLE jdbc_items (id serial PRIMARY KEY, name text UNIQUE, qty int)");
        }

        check("simple_select", () -> {
            try (Connection c = connect("")) {
                ResultSet rs = c.createStatement().executeQuery("SELECT 1 + 1, 'x'::text");
                expect(rs.next() && rs.getInt(1) == 2 && rs.getString(2).equals("x"), "row");
            }
        });

        // Past prepareThreshold (5 by default) pgjdbc switches to a named server
        // statement and binary transfer of the results.
        check("prepared_past_threshold", () -> {
            try (Connection c = connect("prepareThreshold=5")) {
                PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2, ?::text || '!'");
                for (int i = 0; i < 25; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "n" + i);
                    ResultSet rs = ps.executeQuery();
                    expect(rs.next() && rs.getInt(1) == i * 2 && rs.getString(2).equals("n" + i + "!"), "iteration " + i);
                }
                expect(ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(), "server-prepared");
            }
        });

        check("prepared_many_statements_interleaved", () -> {
            try (Connection c = connect("prepareThreshold=1")) {
                List<PreparedStatement> ps = new ArrayList<>();
                for (int k = 0; k < 10; k++) ps.add(c.prepareStatement("SELECT ?::int + " + k));
                for (int round = 0; round < 5; round++) {
                    for (int k = 0; k < 10; k++) {
                        ps.get(k).setInt(1, round);
                        ResultSet rs = ps.get(k).executeQuery();
                        expect(rs.next() && rs.getInt(1) == round + k, "round " + round + " stmt " + k);
                    }
                }
            }
        });

        check("binary_transfer_types", () -> {
            try (Connection c = connect("prepareThreshold=-1&binaryTransfer=true")) {
                PreparedStatement ps = c.prepareStatement(
                    "SELECT ?::int8, ?::float8, ?::numeric, ?::timestamptz, ?::bytea, ?::uuid, ARRAY[1,2,3]::int4[], ?::date, true, NULL::int");
                java.sql.Timestamp ts = java.sql.Timestamp.valueOf("2024-02-29 12:34:56.789");
                UUID u = UUID.fromString("123e4567-e89b-12d3-a456-426614174000");
                for (int i = 0; i < 3; i++) {
                    ps.setLong(1, 9007199254740993L);
                    ps.setDouble(2, 1.5e300);
                    ps.setBigDecimal(3, new java.math.BigDecimal("12345678901234567890.0123456789"));
                    ps.setTimestamp(4, ts);
                    ps.setBytes(5, new byte[] {0, 1, 2, (byte) 255});
                    ps.setObject(6, u);
                    ps.setDate(7, java.sql.Date.valueOf("1999-12-31"));
                    ResultSet rs = ps.executeQuery();
                    expect(rs.next(), "row");
                    expect(rs.getLong(1) == 9007199254740993L, "int8");
                    expect(rs.getDouble(2) == 1.5e300, "float8");
                    expect(rs.getBigDecimal(3).toPlainString().equals("12345678901234567890.0123456789"), "numeric");
                    expect(rs.getTimestamp(4).equals(ts), "timestamptz");
                    expect(Arrays.equals(rs.getBytes(5), new byte[] {0, 1, 2, (byte) 255}), "bytea");
                    expect(rs.getObject(6).equals(u), "uuid");
                    Integer[] arr = (Integer[]) rs.getArray(7).getArray();
                    expect(Arrays.equals(arr, new Integer[] {1, 2, 3}), "array");
                    expect(rs.getDate(8).toString().equals("1999-12-31"), "date");
                    expect(rs.getBoolean(9), "bool");
                    rs.getInt(10);
                    expect(rs.wasNull(), "null");
                }
            }
        });

        check("batch_insert", () -> {
            try (Connection c = connect("")) {
                c.setAutoCommit(false);
                PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_items (name, qty) VALUES (?, ?)");
                for (int i = 0; i < 1000; i++) {
                    ps.setString(1, "batch-" + i);
                    ps.setInt(2, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                c.commit();
                expect(counts.length == 1000, "1000 counts");
                ResultSet rs = c.createStatement().executeQuery("SELECT count(*), sum(qty) FROM jdbc_items WHERE name LIKE 'batch-%'");
                expect(rs.next() && rs.getInt(1) == 1000 && rs.getLong(2) == 499500, "rows stored");
                c.commit();
            }
        });

        check("batch_insert_rewritten", () -> {
            try (Connection c = connect("reWriteBatchedInserts=true")) {
                PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_items (name, qty) VALUES (?, ?)");
                for (int i = 0; i < 500; i++) {
                    ps.setString(1, "rw-" + i);
                    ps.setInt(2, 1);
                    ps.addBatch();
                }
                ps.executeBatch();
                ResultSet rs = c.createStatement().executeQuery("SELECT count(*) FROM jdbc_items WHERE name LIKE 'rw-%'");
                expect(rs.next() && rs.getInt(1) == 500, "rows stored");
            }
        });

        check("generated_keys", () -> {
            try (Connection c = connect("")) {
                PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_items (name, qty) VALUES (?, 7)", Statement.RETURN_GENERATED_KEYS);
                ps.setString(1, "keyed");
                ps.executeUpdate();
                ResultSet rs = ps.getGeneratedKeys();
                expect(rs.next() && rs.getInt("id") > 0, "generated id");
            }
        });

        check("transaction_rollback_and_savepoint", () -> {
            try (Connection c = connect("")) {
                c.setAutoCommit(false);
                Statement s = c.createStatement();
                s.executeUpdate("INSERT INTO jdbc_items (name, qty) VALUES ('tx-kept', 1)");
                Savepoint sp = c.setSavepoint();
                s.executeUpdate("INSERT INTO jdbc_items (name, qty) VALUES ('tx-undone', 1)");
                c.rollback(sp);
                c.commit();
                s.executeUpdate("INSERT INTO jdbc_items (name, qty) VALUES ('tx-rolled', 1)");
                c.rollback();
                ResultSet rs = s.executeQuery("SELECT string_agg(name, ',' ORDER BY name) FROM jdbc_items WHERE name LIKE 'tx-%'");
                expect(rs.next() && "tx-kept".equals(rs.getString(1)), "only tx-kept: " + rs.getString(1));
                c.commit();
            }
        });

        check("error_sqlstate_and_recovery", () -> {
            try (Connection c = connect("")) {
                Statement s = c.createStatement();
                s.executeUpdate("INSERT INTO jdbc_items (name, qty) VALUES ('dup', 1)");
                String state = null;
                try {
                    s.executeUpdate("INSERT INTO jdbc_items (name, qty) VALUES ('dup', 2)");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                expect("23505".equals(state), "unique_violation, got " + state);
                ResultSet rs = s.executeQuery("SELECT 42");
                expect(rs.next() && rs.getInt(1) == 42, "usable after error");
            }
        });

        // Large objects need a transaction; they work in both pool modes.
        check("large_object_roundtrip", () -> {
            try (Connection c = connect("")) {
                c.setAutoCommit(false);
                LargeObjectManager lom = c.unwrap(PGConnection.class).getLargeObjectAPI();
                long oid = lom.createLO(LargeObjectManager.READWRITE);
                byte[] data = new byte[300000];
                for (int i = 0; i < data.length; i++) data[i] = (byte) (i * 31);
                LargeObject lo = lom.open(oid, LargeObjectManager.WRITE);
                lo.write(data);
                lo.close();
                c.commit();
                lo = lom.open(oid, LargeObjectManager.READ);
                byte[] back = lo.read(data.length + 10);
                lo.close();
                lom.delete(oid);
                c.commit();
                expect(Arrays.equals(back, data), "same bytes back");
            }
        });

        check("cursor_fetch_size", () -> {
            try (Connection c = connect("")) {
                c.setAutoCommit(false);
                Statement s = c.createStatement();
                s.setFetchSize(100);
                ResultSet rs = s.executeQuery("SELECT g FROM generate_series(1, 5000) g");
                long sum = 0;
                int n = 0;
                while (rs.next()) { sum += rs.getInt(1); n++; }
                c.commit();
                expect(n == 5000 && sum == 12502500L, "5000 rows in pages, got " + n);
            }
        });

        check("database_metadata", () -> {
            try (Connection c = connect("")) {
                ResultSet rs = c.getMetaData().getColumns(null, "public", "jdbc_items", null);
                Set<String> cols = new HashSet<>();
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME"));
                expect(cols.equals(new HashSet<>(Arrays.asList("id", "name", "qty"))), "columns " + cols);
            }
        });

        check("statement_cancel_by_timeout", () -> {
            try (Connection c = connect("")) {
                Statement s = c.createStatement();
                s.setQueryTimeout(1);
                String state = null;
                long t0 = System.nanoTime();
                try {
                    s.execute("SELECT pg_sleep(10)");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                long ms = (System.nanoTime() - t0) / 1000000;
                expect("57014".equals(state), "query_canceled, got " + state);
                expect(ms < 5000, "cancelled within 5s, took " + ms + "ms");
                ResultSet rs = s.executeQuery("SELECT 1");
                expect(rs.next(), "usable after cancel");
            }
        });

        // pgjdbc re-prepares by itself after "cached plan must not change result type".
        check("reprepare_after_column_type_change", () -> {
            try (Connection c = connect("prepareThreshold=1")) {
                Statement s = c.createStatement();
                s.execute("DROP TABLE IF EXISTS jdbc_retype; CREATE TABLE jdbc_retype (v int); INSERT INTO jdbc_retype VALUES (1)");
                PreparedStatement ps = c.prepareStatement("SELECT * FROM jdbc_retype");
                for (int i = 0; i < 3; i++) {
                    ResultSet rs = ps.executeQuery();
                    expect(rs.next() && rs.getInt(1) == 1, "before");
                }
                s.execute("ALTER TABLE jdbc_retype ALTER COLUMN v TYPE text");
                ResultSet rs;
                try {
                    rs = ps.executeQuery();
                } catch (SQLException e) {
                    // the first execution may fail with 0A000; the next one must work
                    expect("0A000".equals(e.getSQLState()), "first failure is 0A000, got " + e.getSQLState());
                    rs = ps.executeQuery();
                }
                expect(rs.next() && rs.getString(1).equals("1"), "after type change");
            }
        });

        check("backend_pid_matches_server", () -> {
            try (Connection c = connect("")) {
                int pid = c.unwrap(PGConnection.class).getBackendPID();
                ResultSet rs = c.createStatement().executeQuery("SELECT pg_backend_pid()");
                expect(rs.next() && rs.getInt(1) == pid, "pg_backend_pid " + rs.getInt(1) + " vs BackendKeyData " + pid);
            }
        });

        check("listen_notify", () -> {
            try (Connection l = connect(""); Connection n = connect("")) {
                l.createStatement().execute("LISTEN jdbc_chan");
                n.createStatement().execute("NOTIFY jdbc_chan, 'hello'");
                PGNotification[] got = null;
                for (int i = 0; i < 20 && (got == null || got.length == 0); i++) {
                    got = l.unwrap(PGConnection.class).getNotifications(250);
                }
                expect(got != null && got.length == 1 && got[0].getParameter().equals("hello"), "one notification");
            }
        });

        check("session_setting_persists", () -> {
            try (Connection c = connect("")) {
                Statement s = c.createStatement();
                s.execute("SET search_path TO pg_catalog, public");
                ResultSet rs = s.executeQuery("SHOW search_path");
                expect(rs.next() && rs.getString(1).equals("pg_catalog, public"), "search_path kept: " + rs.getString(1));
            }
        });

        check("concurrent_connections", () -> {
            ExecutorService pool = Executors.newFixedThreadPool(8);
            List<Future<Long>> fs = new ArrayList<>();
            for (int t = 0; t < 8; t++) {
                final int tt = t;
                fs.add(pool.submit(() -> {
                    long sum = 0;
                    try (Connection c = connect("")) {
                        PreparedStatement ps = c.prepareStatement("SELECT ?::int + 1");
                        for (int i = 0; i < 50; i++) {
                            ps.setInt(1, tt * 1000 + i);
                            ResultSet rs = ps.executeQuery();
                            rs.next();
                            sum += rs.getInt(1);
                        }
                    }
                    return sum;
                }));
            }
            long total = 0;
            for (Future<Long> f : fs) total += f.get(60, TimeUnit.SECONDS);
            pool.shutdown();
            long want = 0;
            for (int t = 0; t < 8; t++) for (int i = 0; i < 50; i++) want += t * 1000 + i + 1;
            expect(total == want, "sum " + total + " != " + want);
        });

        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(0);
    }
}
