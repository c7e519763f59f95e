#!/usr/bin/env bash
# Entrypoint of the welfare-exchange image (run under tini).
#
# Files the services create — task logs, staged (encrypted) request files, the registry
# snapshot — are private to the service user: set a strict umask, then run the command.
set -euo pipefail
umask "${UMASK:-0077}"
exec "$@"
