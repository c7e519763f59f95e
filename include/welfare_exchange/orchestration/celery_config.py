"""Celery settings of the workers: Airflow's defaults, plus the project's modules imported at boot.

A Celery worker imports the ``imports`` modules once, before it forks its pool processes; every
task process forked from those starts with them imported instead of importing them again in
each try (see :data:`welfare_exchange.exchange.scheduling.PRELOAD_MODULES`); and each pool process is
free for the next try as soon as a try's process exits (:mod:`welfare_exchange.orchestration.task_exit`). Selected with
``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=welfare_exchange.orchestration.celery_config.CELERY_CONFIG``.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from welfare_exchange.exchange.scheduling import PRELOAD_MODULES
from welfare_exchange.orchestration import task_exit

# A Celery worker loads this when it creates its app, before it forks its pool: each pool
# process's supervisor then wakes the moment its try's process exits (task_exit).
task_exit.install()

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": [*DEFAULT_CELERY_CONFIG.get("imports", ()), *PRELOAD_MODULES]}
