"""How task slots are shared when many exchanges run at once: depth-first, and how many slots.

**Depth-first.** Airflow's scheduler hands free slots to the scheduled task instances of *all*
runs ordered by ``priority_weight`` (highest first), then by the run's logical date (checked in
Airflow 3.3's ``SchedulerJobRunner._executable_task_instances_to_queued``). With Airflow's
default weight rule, ``downstream``, a task weighs the sum of the tasks after it, so the *first*
step of every new run outranks the later steps of runs already under way: twenty requests
dropped together all advance step by step together, and a small request waits for every other
municipality's. With ``upstream`` a task weighs the sum of the tasks before it, so every later
step of a started exchange outranks the early steps of the next one: a started exchange
finishes before another takes the slots. It applies to every DAG through the shared task
defaults, so it also orders across municipalities (one DAG each).

**How many slots.** A task try is mostly process start, DAG parse, API and database round trips
and file transfer, not CPU: on 2 cores, parallelism 8 finished a 20-exchange batch in 57 % of
the time parallelism 4 took, with no lock errors. :func:`derived_parallelism` gives
:data:`TASKS_PER_CORE` slots per core; ``scripts/env.sh`` and the image's entrypoint apply the
same rule when ``AIRFLOW__CORE__PARALLELISM`` is not set.

**Less paid per try.** Each task try runs in a process forked from an executor worker; it
imported Airflow's DAG bag and the DAG file again and, inside the step, the SFTP hook and
paramiko: measured in a batch on 2 cores, the DAG file's import and parse took 2.5 s (median) of
every try, more than the step. :data:`PRELOAD_MODULES` are imported once before the workers are
forked — by the LocalExecutor of :mod:`welfare_exchange.orchestration.executor`, and by a Celery
worker at boot (:mod:`welfare_exchange.orchestration.celery_config`) — so every task process
inherits them; the DAG file's own parse then builds only the task's DAG
(``get_parsing_context()``). (Airflow 3.3's ``[scheduler] mp_start_method=forkserver`` with these
modules preloaded was measured *slower*: 10–20 s between a try's start and its parse.)

**A slot freed when the try ends.** A LocalExecutor worker process (or a Celery worker's
process) runs one try at a time: it supervises the task process and is free again only when the
supervisor's loop has seen the process exit. Airflow 3.3's supervisor waits in ``select()`` for
up to ``[workers] min_heartbeat_interval`` (default 5 s) at a time, and when the task process
closes its sockets before it has been reaped, the last wait runs the full interval: every try
held its slot ~5 s after its step had ended (measured by the batch benchmark's ``to_started``
phase, a queued step waiting for a free worker: 5.1 s of every step under a 20-exchange batch).
Two ways out, each where it applies:

- where the project starts the workers — the preloading LocalExecutor and the Celery workers
  (:mod:`welfare_exchange.orchestration.task_exit`) — the supervisor also waits on the task
  process's exit itself, so the slot is free at once and the heartbeat keeps Airflow's 5 s;
- where Airflow's own LocalExecutor runs (the dev servers, ``scripts/env.sh``), nothing watches
  the exit, and the project shortens the wake-up to :data:`WORKER_WAKEUP_SECONDS`. That costs a
  heartbeat a second per running try: on a CPU-bound 2-core host a 20-exchange batch took
  122.5 s with it against 103.6 s with 5 s, so the image (whose Celery workers are watched)
  keeps Airflow's 5 s.

Plain Python: no Airflow import, so the rules are testable on their own.
"""

from __future__ import annotations

import os

from welfare_exchange.settings import get_settings

#: Task slots per core when parallelism is derived from the machine.
TASKS_PER_CORE = 4

#: ``[workers] min_heartbeat_interval`` where nothing watches a task process's exit (Airflow's own
#: LocalExecutor: the dev servers, ``scripts/env.sh``): how long a task supervisor waits at most
#: before it looks again whether its task process has ended (Airflow's default, 5, keeps a
#: finished try's slot ~5 s). Where the exit is watched (:mod:`welfare_exchange.orchestration.task_exit`),
#: Airflow's 5 s stays: the slot is free at once and the heartbeat costs a fifth.
WORKER_WAKEUP_SECONDS = 1

#: Never fewer slots than this (a one-core machine still runs sensors beside a step).
MIN_PARALLELISM = 4


#: Imported once before the executor's workers are forked, inherited by every task process: the task runner,
#: what it imports to parse a DAG file, what the Method 1 DAG file imports, and what the steps
#: import on first use.
PRELOAD_MODULES = (
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",
    "airflow.dag_processing.bundles.manager",
    "welfare_exchange.orchestration.dag_factory",
    "welfare_exchange.channels.sftp",
    "welfare_exchange.channels.smime",
    "airflow.providers.sftp.hooks.sftp",
    "sqlalchemy.dialects.postgresql.psycopg2",
)


def task_defaults() -> dict[str, str]:
    """The scheduling part of every DAG's ``default_args`` (the weight rule of the setting)."""
    return {"weight_rule": get_settings().task_weight_rule}


def cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container limit narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def derived_parallelism(core_count: int | None = None) -> int:
    """Task slots for a machine with ``core_count`` cores (default: this one's)."""
    return max(MIN_PARALLELISM, TASKS_PER_CORE * (core_count or cores()))
