"""Retry a failed exchange: clear its failed tasks and their downstream through Airflow's API.

One function for the Exchanges view's button and ``welfare-exchange exchange retry ID``. What
an operator did by hand in Airflow's grid ("Clear" with *Downstream*) becomes one action that
checks first: a retry is refused, with the reason, when the exchange was refused (a corrected
file makes a new exchange), is a duplicate, or has no failed task (running, or done).

Safe as ever: the ledger answers every step a retry repeats, so nothing is delivered twice.
Each request is audited as ``exchange.retry_requested`` under the operator's name, outcome
``requested`` (with the tasks cleared) or ``refused`` (with why); never personal data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from welfare_exchange import audit, failures
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange
from welfare_exchange.orchestration.airflow_api import ACTIVE_TASK_STATES, AirflowApi, AirflowApiError

log = logging.getLogger(__name__)

ACTION = "exchange.retry_requested"


@dataclass(frozen=True)
class Outcome:
    """What became of a retry request. ``status`` is the HTTP status the view answers with."""

    ok: bool
    status: int
    message: str
    failed: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)


def _record(outcome: Outcome, *, operator: str, via: str, dag_id: str | None, run_id: str | None,
            exchange_id: int | None, protocol_id: int | None) -> Outcome:
    actor = audit.Actor(type="user", name=operator, dag_id=dag_id, run_id=run_id)
    with session_scope() as session:
        audit.record(session, ACTION, "requested" if outcome.ok else "refused", actor=actor, protocol_id=protocol_id,
                     exchange_id=exchange_id, message=f"{outcome.message} (through {via})")
    return outcome


def _failed_cause(dag_id: str, run_id: str, task_id: str) -> str | None:
    with session_scope() as session:
        message = session.scalar(
            sa.select(AuditRecord.message).where(AuditRecord.action == "task.failed", AuditRecord.dag_id == dag_id,
                                                  AuditRecord.run_id == run_id, AuditRecord.task_id == task_id)
            .order_by(AuditRecord.id.desc()).limit(1)
        )
    recorded = failures.parse_fact_message(message)
    return recorded.cause if recorded else None


def retry(api: AirflowApi, *, operator: str, via: str, exchange_id: int | None = None, dag_id: str | None = None,
          run_id: str | None = None) -> Outcome:
    """Retry the exchange ``exchange_id`` (or the run ``dag_id``/``run_id`` of one not opened yet).

    :param api: Airflow's API, acting as the operator (Airflow checks the operator may clear).
    :param operator: the operator's login name, for the audit.
    :param via: ``the Exchanges view`` or ``the CLI``, for the audit.
    """
    protocol_id = None
    with session_scope() as session:
        exchange = session.get(Exchange, exchange_id) if exchange_id is not None else None
        if exchange_id is not None and exchange is None:
            return Outcome(False, 404, f"no exchange {exchange_id} in the ledger")
        if exchange is not None:
            dag_id, run_id, protocol_id, state = exchange.dag_id, exchange.run_id, exchange.protocol_id, exchange.state
        elif dag_id and run_id:
            found = session.query(Exchange).filter_by(dag_id=dag_id, run_id=run_id).order_by(Exchange.id).first()
            exchange_id, protocol_id, state = (found.id, found.protocol_id, found.state) if found else (None, None, None)
        else:
            return Outcome(False, 400, "name an exchange id, or a DAG id and run id")
    what = f"exchange {exchange_id}" if exchange_id is not None else f"run {run_id} of {dag_id}"
    context = {"operator": operator, "via": via, "dag_id": dag_id, "run_id": run_id, "exchange_id": exchange_id,
               "protocol_id": protocol_id}
    if state in ("quarantined", "duplicate"):
        reason = ("its request was refused: a refused request is final; the municipality sends a corrected file, "
                  "which makes a new exchange" if state == "quarantined"
                  else "it is a duplicate of an earlier exchange: nothing to process")
        return _record(Outcome(False, 409, f"{what} is not retried: {reason}"), **context)
    if not dag_id or not run_id:
        return _record(Outcome(False, 409, f"{what} has no Airflow run to retry"), **context)
    try:
        tasks = api.task_instances([(dag_id, run_id)]).get((dag_id, run_id), ())
    except AirflowApiError as err:
        return Outcome(False, err.status if err.status in (401, 403) else 502, f"{what}: {err}")
    if not tasks:
        return _record(Outcome(False, 404, f"Airflow knows no run {run_id} of {dag_id}"), **context)
    failed = sorted({t.task_id for t in tasks if t.state == "failed"})
    if not failed:
        return _record(Outcome(False, 409, f"{what} is not failed: nothing to retry"), **context)
    if any(t.state in ACTIVE_TASK_STATES for t in tasks):
        return _record(Outcome(False, 409, f"{what}: a task of its run is still running; retry once it has finished",
                               failed), **context)
    causes = sorted({c for c in (_failed_cause(dag_id, run_id, t) for t in failed) if c})
    try:
        cleared = api.clear(dag_id, run_id, failed, note=f"retry requested by {operator} through {via}")
    except AirflowApiError as err:
        if err.status in (401, 403):  # Airflow's own refusal of this user: ours agreed, or was bypassed
            return _record(Outcome(False, err.status, f"{what}: Airflow refused the retry for {operator}"), **context)
        return Outcome(False, 502, f"{what}: {err}")
    because = f" (cause: {', '.join(causes)})" if causes else ""
    return _record(Outcome(True, 200, f"retry of {what} requested: {', '.join(failed)} failed{because}; "
                           f"{len(cleared)} task(s) cleared with their downstream", failed, cleared), **context)
