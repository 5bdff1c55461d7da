#!/bin/sh
# Run by the postgres image once, when its data volume is empty: creates the
# application's role (a plain role, not a superuser) with the password of
# the app_password secret, and its database.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v app_password="$(cat /run/secrets/app_password)" <<'SQL'
CREATE ROLE app LOGIN PASSWORD :'app_password';
CREATE DATABASE shop OWNER app;
SQL
