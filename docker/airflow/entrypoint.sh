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
# [workers] min_heartbeat_interval stays Airflow's 5 s unless the operator sets it: the image's
# Celery workers (celery_config) and the preloading LocalExecutor wake at a task process's exit
# (welfare_exchange.orchestration.task_exit), so a worker is free at once without a heartbeat a second.
exec "$@"
