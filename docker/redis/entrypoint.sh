#!/usr/bin/env bash
# Entrypoint of the redis service (the Celery broker): refuse a placeholder password, then
# the image's own entrypoint (which drops to the redis user) with redis-server reading its
# configuration from stdin, so that the password is on no command line (`ps` shows those).
#
# REDIS_PORT and REDIS_BIND exist for the tests, which run this script on the host.
set -euo pipefail

require-secrets.sh redis REDIS_PASSWORD \
  || exit 1
exec docker-entrypoint.sh redis-server - <<CONFIG
requirepass $REDIS_PASSWORD
appendonly yes
port ${REDIS_PORT:-6379}
${REDIS_BIND:+bind $REDIS_BIND}
CONFIG
