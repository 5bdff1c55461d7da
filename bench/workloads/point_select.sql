-- Point select over a working set of :keys accounts (uniform): the
-- equivalent of pgbench -S on the rows a cache is for.
\set aid random(1, :keys)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
