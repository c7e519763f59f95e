#!/usr/bin/env bash
# Entrypoint of the postgres service: refuse placeholder passwords, then the image's own
# entrypoint (docker-entrypoint.sh), which initialises the server on its first start.
#
# Checked here and not in initdb.sh: the image runs its init scripts only on the very first
# start, and one that fails leaves a data directory without the databases that later starts
# never repair. Here nothing has been written yet.
set -euo pipefail

require-secrets.sh postgres POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD WELFARE_EXCHANGE_DB_PASSWORD \
  || exit 1
exec docker-entrypoint.sh "$@"
