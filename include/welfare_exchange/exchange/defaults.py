"""Default task arguments and the failure callback, in one place for every exchange DAG.

The DAG integrity test checks that every DAG uses these (retries with exponential backoff,
an owner, tags). Retry timing can be shortened through the environment for tests and demos.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from welfare_exchange import alerts, audit, insz
from welfare_exchange.db import session_scope

log = logging.getLogger(__name__)

OWNER = "welfare-exchange"
RUNBOOK = "docs/RUNBOOK.md"

#: task id → the runbook section an operator should read when it fails.
RUNBOOK_STEPS = {
    "protocol_gate": "The protocol gate failed",
    "wait_for_request": "No request arrived",
    "fetch_request": "SFTP or e-mail is unreachable",
    "decrypt_and_validate": "A request was refused",
    "match_entitlements": "The project database is unreachable",
    "build_result": "The key connection is missing or wrong",
    "protocol_gate_before_delivery": "The protocol gate failed",
    "deliver_result": "SFTP or e-mail is unreachable",
    "record_data_subjects": "The project database is unreachable",
    "record_retention": "The project database is unreachable",
    "end_protocols": "The project database is unreachable",
    "apply_rules": "The project database is unreachable",
    "prune_audit_trail": "The project database is unreachable",
    "anchor_audit_head": "The audit chain is broken",
    "delete_due_items": "SFTP or e-mail is unreachable",
    "wait_for_fresh_snapshot": "A structural feed is late",
    "select_municipalities": "The project database is unreachable",
    "detect_changes": "The project database is unreachable",
    "deliver_feed": "A structural feed cannot be delivered",
    "summarise_feeds": "A structural feed cannot be delivered",
    "open_campaign": "The project database is unreachable",
    "select_families": "The project database is unreachable",
    "render_letters": "Re-run a failed exchange safely",
    "send_messages": "SFTP or e-mail is unreachable",
    "report_to_municipality": "SFTP or e-mail is unreachable",
    "reject_unknown_senders": "SFTP or e-mail is unreachable",
}


#: What the audit says of a try that ended without an exception of its own.
NO_EXCEPTION = (
    "the task ended without an error of its own: Airflow stopped it (the scheduler or executor lost or killed "
    "its process, e.g. a missed heartbeat or an overloaded worker); see the scheduler's log for this try"
)


def _seconds(name: str, default: float) -> dt.timedelta:
    return dt.timedelta(seconds=float(os.environ.get(name, default)))


def runbook_step(task_id: str) -> str:
    return f"{RUNBOOK} § '{RUNBOOK_STEPS.get(task_id, 'Re-run a failed exchange safely')}'"


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
    """Record a failed task in the audit trail and alert the operator, with the runbook step
    that tells what to do.

    Runs in the task's own process after its last try failed. The exception text is ours
    (no personal data by construction); anything INSZ-shaped that slipped in is withheld.
    The alert goes out even when the audit trail cannot be written (the project database
    may be what failed); see :mod:`welfare_exchange.alerts`.
    """
    ti = context["ti"]
    error = context.get("exception")
    text = f"{type(error).__name__}: {error}" if error is not None else NO_EXCEPTION
    if insz.find_insz_shaped(text):
        text = f"{type(error).__name__}: [message withheld: it contained personal data]"
    params = context.get("params") or {}
    actor = audit.Actor(type="system", name="airflow", dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                        try_number=getattr(ti, "try_number", None))
    try:
        with session_scope() as session:
            audit.record(
                session, "task.failed", "failure", actor=actor, protocol_id=params.get("protocol_id"),
                message=f"{text[:1500]} | runbook: {runbook_step(ti.task_id)}",
                fact_key=f"failed:{_try_key(ti)}",
            )
    except Exception:  # the callback must never hide the task's own failure
        log.exception("could not record the failure in the audit trail")
    alerts.send_failure_alert(
        dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=getattr(ti, "try_number", None),
        map_index=getattr(ti, "map_index", None), protocol_id=params.get("protocol_id"), reason=text,
        runbook=runbook_step(ti.task_id),
    )


def default_args() -> dict[str, Any]:
    """Task defaults: retries with exponential backoff for transient SFTP and database errors."""
    return {
        "owner": OWNER,
        "retries": int(os.environ.get("WELFARE_EXCHANGE_TASK_RETRIES", 4)),
        "retry_delay": _seconds("WELFARE_EXCHANGE_RETRY_DELAY_SECONDS", 30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
        "on_execute_callback": on_task_start,
        "on_failure_callback": on_task_failure,
    }
