#!/usr/bin/env bash
# Install (Debian's package) and start a local PostgreSQL for the journal and its tests, then
# create the role and database named by QT_PG_* (defaults below). Idempotent; needs root for apt.
set -euo pipefail
PG_USER="${QT_PG_USER:-quantum}"
PG_PASSWORD="${QT_PG_PASSWORD:-quantum}"
PG_DB="${QT_PG_DB:-quantum_trader}"

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
if ! pg_lsclusters -h | awk '{print $1"-"$2}' | grep -q "^${version}-main$"; then
  pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start
fi

as_postgres() { su postgres -c "$1"; }
for _ in $(seq 1 30); do
  as_postgres "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
as_postgres "psql -qtAc \"select 1 from pg_roles where rolname='${PG_USER}'\"" | grep -q 1 \
  || as_postgres "psql -qc \"create role ${PG_USER} login superuser password '${PG_PASSWORD}'\""
as_postgres "psql -qtAc \"select 1 from pg_database where datname='${PG_DB}'\"" | grep -q 1 \
  || as_postgres "createdb -O ${PG_USER} ${PG_DB}"
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
echo "PostgreSQL ${version} ready: postgresql://${PG_USER}:***@127.0.0.1:${port}/${PG_DB}"
