#!/usr/bin/env bash
# PostgreSQL first-start hook (mounted into /docker-entrypoint-initdb.d/ of the postgres
# service): creates the Airflow metadata database and the project database, each with its
# own non-superuser role, by running create-databases.sql with psql variables.
#
# The names and passwords come from the container's environment (docker-compose.yaml passes
# them from .env); nothing secret is in this script or in the SQL file.
set -euo pipefail

sql="${WELFARE_EXCHANGE_INIT_SQL:-/opt/welfare-exchange/postgres/create-databases.sql}"
for name in AIRFLOW_DB_NAME AIRFLOW_DB_USER AIRFLOW_DB_PASSWORD \
            WELFARE_EXCHANGE_DB_NAME WELFARE_EXCHANGE_DB_USER WELFARE_EXCHANGE_DB_PASSWORD; do
  if [ -z "${!name:-}" ]; then
    echo "initdb: $name is not set" >&2
    exit 1
  fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v airflow_db="$AIRFLOW_DB_NAME" \
  -v airflow_user="$AIRFLOW_DB_USER" \
  -v airflow_password="$AIRFLOW_DB_PASSWORD" \
  -v project_db="$WELFARE_EXCHANGE_DB_NAME" \
  -v project_user="$WELFARE_EXCHANGE_DB_USER" \
  -v project_password="$WELFARE_EXCHANGE_DB_PASSWORD" \
  -f "$sql"
echo "initdb: databases $AIRFLOW_DB_NAME and $WELFARE_EXCHANGE_DB_NAME ready"
