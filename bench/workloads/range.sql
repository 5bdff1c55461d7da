-- A range of :rows accounts (about 115 bytes each on the wire), from 20
-- distinct starting points: :rows = 90 gives ~10 KB, 8700 gives ~1 MB.
\set lo 1 + :rows * random(0, 19)
\set hi :lo + :rows - 1
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid BETWEEN :lo AND :hi ORDER BY aid;
