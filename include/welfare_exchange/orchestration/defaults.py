"""Default task arguments and the failure callback, in one place for every exchange DAG.

The DAG integrity test checks that every DAG uses these (retries with exponential backoff,
an owner, tags). Retry timing can be shortened through the environment for tests and demos.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from welfare_exchange import alerts, audit
from welfare_exchange.db import session_scope
from welfare_exchange.exchange import scheduling
from welfare_exchange.orchestration import hooks  # noqa: F401  (DAG files import this: the tasks read connections through the hooks)
from welfare_exchange.settings import get_timing

log = logging.getLogger(__name__)

OWNER = "welfare-exchange"


def _try_key(ti: Any) -> str:
    """``dag:run:task[:map index]:try`` — one task try, mapped tasks (a feed per municipality) included."""
    map_index = getattr(ti, "map_index", -1)
    mapped = f":{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{ti.dag_id}:{ti.run_id}:{ti.task_id}{mapped}:{getattr(ti, 'try_number', 0)}"


def on_task_start(context: Any) -> None:
    """Record in the audit trail that a task try started (its outcome is recorded by the step).

    Runs in the task's process right before ``execute``. A sensor that reschedules or defers
    runs it again on every poke and resume; the ``fact_key`` (one per try) keeps that to one
    record. Never fails the task: a database that cannot be reached fails the step itself.
    """
    ti = context["ti"]
    params = context.get("params") or {}
    try:
        with session_scope() as session:
            audit.record(
                session, "task.started", "started", actor=audit.Actor.from_context(context),
                protocol_id=params.get("protocol_id"),
                message=f"task {ti.task_id} started (try {getattr(ti, 'try_number', '?')})",
                fact_key=f"started:{_try_key(ti)}",
            )
    except Exception:
        log.exception("could not record the task's start in the audit trail")


def on_task_failure(context: Any) -> None:
    """Record a failed task (its cause, its exchange, the runbook section) and alert the operator.

    Runs in the task's own process after its last try failed; see
    :func:`welfare_exchange.alerts.task_failed`.
    """
    ti = context["ti"]
    alerts.task_failed(
        dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, error=context.get("exception"),
        fact_key=f"failed:{_try_key(ti)}", try_number=getattr(ti, "try_number", None),
        map_index=getattr(ti, "map_index", None), protocol_id=(context.get("params") or {}).get("protocol_id"),
    )


def default_args() -> dict[str, Any]:
    """Task defaults: retries with exponential backoff for transient SFTP and database errors."""
    timing = get_timing()
    return {
        "owner": OWNER,
        "retries": timing.task_retries,
        "retry_delay": dt.timedelta(seconds=timing.retry_delay),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
        "on_execute_callback": on_task_start,
        "on_failure_callback": on_task_failure,
        **scheduling.task_defaults(),
    }
