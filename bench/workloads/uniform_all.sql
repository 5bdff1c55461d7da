-- Point select over every account, uniform: almost every request misses
-- (measures what the miss path costs: lookup + upstream + fill).
\set aid random(1, :naccounts)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
