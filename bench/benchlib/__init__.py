"""Helpers of bench/run: the side-by-side benchmark of direct Postgres,
PgBouncer, pgpool-II and pgstash. Standard library only (matplotlib, for
the chart, is optional and installed by bench/run when missing)."""
