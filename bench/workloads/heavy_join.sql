-- A heavier read: join + aggregates over a range of 20,000 accounts
-- (about 9 ms in Postgres at one client), 50 distinct ranges.
-- (min/max are left out: pgpool-II 4.3 does not cache queries using them.)
\set lo 1 + 20000 * random(0, 49)
\set hi :lo + 19999
SELECT b.bid, count(*) AS accounts, sum(a.abalance) AS balance,
       avg(a.abalance) AS mean, count(DISTINCT a.abalance) AS distinct_balances
  FROM pgbench_accounts a JOIN pgbench_branches b ON b.bid = a.bid
 WHERE a.aid BETWEEN :lo AND :hi
 GROUP BY b.bid ORDER BY b.bid;
