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


def _try_key(ti: Any, try_number: int | None = None) -> str:
    """``dag:run:task[:map index]:try`` — one task try, mapped tasks (a feed per municipality) included."""
    map_index = getattr(ti, "map_index", -1)
    mapped = f":{map_index}" if map_index is not None and map_index >= 0 else ""
    number = getattr(ti, "try_number", 0) if try_number is None else try_number
    return f"{ti.dag_id}:{ti.run_id}:{ti.task_id}{mapped}:{number}"


#: The facts that record how a try ended (``fact_key`` prefixes).
OUTCOME_KEYS = ("succeeded", "retried", "failed")


def on_task_start(context: Any) -> None:
    """Record in the audit trail that a task try started, before the step runs (``pre_execute``).

    Runs in the task's process right before ``execute``. A sensor that reschedules or defers
    runs it again on every poke and resume; the ``fact_key`` (one per try) keeps that to one
    record. A start that cannot be recorded (the project database down) fails the try, which is
    retried: a try never runs without its start in the audit trail. (Airflow swallows errors of
    ``on_execute_callback``; a ``pre_execute`` hook's error fails the try.)
    """
    ti = context["ti"]
    params = context.get("params") or {}
    actor = audit.Actor.from_context(context)
    with session_scope() as session:
        audit.record(
            session, "task.started", "started", actor=actor, protocol_id=params.get("protocol_id"),
            message=f"task {ti.task_id} started (try {getattr(ti, 'try_number', '?')})",
            fact_key=f"started:{_try_key(ti)}",
        )
        _account_for_earlier_tries(session, ti, actor, params.get("protocol_id"))


def _account_for_earlier_tries(session, ti: Any, actor: audit.Actor, protocol_id: int | None) -> None:
    """Record, once, each earlier try of this task that left no start or no outcome in the trail.

    A try whose start could not be recorded failed before its step ran; a try whose process was
    killed, or whose database was down when it failed, could not record its outcome. The next
    try closes the gap (``task.try_unrecorded``), so the trail accounts for every try.
    """
    for number in range(1, int(getattr(ti, "try_number", 1) or 1)):
        key = _try_key(ti, number)
        missing = [what for what, present in (
            ("start", audit.fact_exists(session, f"started:{key}")),
            ("outcome", any(audit.fact_exists(session, f"{prefix}:{key}") for prefix in OUTCOME_KEYS)),
        ) if not present]
        if missing:
            audit.record(
                session, "task.try_unrecorded", "failure", actor=actor, protocol_id=protocol_id,
                message=f"try {number} of task {ti.task_id} had no {' and no '.join(missing)} in the audit trail when "
                f"try {ti.try_number} started (its process was killed, or the project database was unreachable); "
                "Airflow retried it",
                fact_key=f"unrecorded:{key}",
            )


def on_task_success(context: Any) -> None:
    """Record that a task try succeeded: with the start, every try has its outcome in the audit trail."""
    ti = context["ti"]
    alerts.task_outcome(
        dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, outcome="success", error=None,
        fact_key=f"succeeded:{_try_key(ti)}", try_number=getattr(ti, "try_number", None),
        protocol_id=(context.get("params") or {}).get("protocol_id"),
    )


def on_task_retry(context: Any) -> None:
    """Record a failed try that will be retried (its cause and runbook section); no alert.

    Runs in the task's process, or — for a try whose process died (SIGKILL, lost heartbeat) —
    where Airflow runs the callbacks of such tries; the ``fact_key`` keeps it to one record.
    """
    ti = context["ti"]
    alerts.task_outcome(
        dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, outcome="retry", error=context.get("exception"),
        fact_key=f"retried:{_try_key(ti)}", try_number=getattr(ti, "try_number", None),
        protocol_id=(context.get("params") or {}).get("protocol_id"),
    )


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
        "pre_execute": on_task_start,
        "on_success_callback": on_task_success,
        "on_retry_callback": on_task_retry,
        "on_failure_callback": on_task_failure,
        **scheduling.task_defaults(),
    }
