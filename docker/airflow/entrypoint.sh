#!/usr/bin/env bash
# Entrypoint of the welfare-exchange image (run under tini).
#
# Files the services create — task logs, staged (encrypted) request files, the registry
# snapshot — are private to the service user: set a strict umask, then run the command.
set -euo pipefail
umask "${UMASK:-0077}"
# Task slots (scheduler) and worker processes (Celery worker) from this host's cores when not set:
# 4 per core, at least 4 (welfare_exchange.exchange.scheduling.derived_parallelism).
_slots=$(( $(nproc) * 4 > 4 ? $(nproc) * 4 : 4 ))
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$_slots}"
export AIRFLOW__CELERY__WORKER_CONCURRENCY="${AIRFLOW__CELERY__WORKER_CONCURRENCY:-$_slots}"
unset _slots
# A task supervisor looks whether its task process ended at least every second (Airflow: 5 s), so a
# worker process is free for the next try right after a try ends
# (welfare_exchange.exchange.scheduling.WORKER_WAKEUP_SECONDS).
export AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="${AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL:-1}"
exec "$@"
