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

**Less paid per try.** Each task try runs in a process forked from a LocalExecutor worker, which
imports Airflow's DAG bag and the DAG file again and, inside the step, the SFTP hook and
paramiko: on this machine about 2 s of imports in every try, before and inside the step. With the scheduler's
``multiprocessing`` start method ``forkserver`` and :data:`PRELOAD_MODULES` preloaded there
(Airflow 3.3's ``[scheduler] mp_start_method`` and ``mp_forkserver_preload``), the workers — and
so every task process forked from them — start with those modules imported; the DAG file's own
parse then only builds the one DAG the task belongs to (``get_parsing_context()``). Restart the
scheduler after upgrading the project, as for any installed code.

Plain Python: no Airflow import, so the rules are testable on their own.
"""

from __future__ import annotations

import os

from welfare_exchange.settings import get_settings

#: Task slots per core when parallelism is derived from the machine.
TASKS_PER_CORE = 4

#: Never fewer slots than this (a one-core machine still runs sensors beside a step).
MIN_PARALLELISM = 4


#: Imported once by the scheduler's fork server, inherited by every task process: the task
#: runner, what the Method 1 DAG file imports, and what the steps import on first use.
PRELOAD_MODULES = (
    "airflow.sdk.execution_time.task_runner",
    # What the task runner imports to parse the DAG file (~1.5 s on this machine under load).
    "airflow.dag_processing.dagbag",
    "airflow.dag_processing.bundles.manager",
    "welfare_exchange.exchange.dag_factory",
    "welfare_exchange.exchange.channels.sftp",
    "welfare_exchange.exchange.channels.smime",
    "airflow.providers.sftp.hooks.sftp",
    "sqlalchemy.dialects.postgresql.psycopg2",
)


def scheduler_environment() -> dict[str, str]:
    """The scheduler's settings that preload :data:`PRELOAD_MODULES` for its task processes."""
    return {"AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(PRELOAD_MODULES)}


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
