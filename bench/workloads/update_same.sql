-- Update one of the :keys accounts that point_select.sql reads.
\set aid random(1, :keys)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
