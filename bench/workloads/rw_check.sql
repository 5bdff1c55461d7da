-- Read-your-writes check. Each client owns 100 accounts (no other client
-- writes them): it reads one twice (a fill, then usually a hit), sets it to
-- a fresh random value, and reads it back twice after the UPDATE was
-- acknowledged (the second read is a hit on what the first one filled,
-- unless another client's write invalidated it meanwhile). The reads have
-- the same shape as point_select.sql, so they are cacheable. A read that
-- does not return the value just written is a violation; it is appended to
-- :violfile (bench/run counts the lines; expected: none).
-- (\shell substitutes only words that start with a colon.)
\set aid 1 + 100 * :client_id + random(0, 99)
\set v random(1, 1000000000)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_accounts SET abalance = :v WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid \gset
\if :abalance != :v
\shell echo stale client :client_id aid :aid wrote :v read :abalance >> :violfile
\endif
SELECT abalance FROM pgbench_accounts WHERE aid = :aid \gset
\if :abalance != :v
\shell echo stale client :client_id aid :aid wrote :v read :abalance >> :violfile
\endif
