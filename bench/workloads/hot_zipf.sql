-- Point select over every account, keys drawn from a zipfian distribution:
-- a few hot rows take most requests (a cache serves mostly hits).
\set aid random_zipfian(1, :naccounts, :zipf)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
