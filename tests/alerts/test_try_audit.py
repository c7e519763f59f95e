"""Every try's start and outcome in the audit trail, as the task defaults record them.

The callbacks get the context Airflow passes (a task instance with its ids and try number);
the database is real (SQLite and PostgreSQL), and unreachable where the test says so.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from welfare_exchange.db import session_scope
from welfare_exchange.db.engine import dispose_engines
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.orchestration.defaults import on_task_retry, on_task_start, on_task_success


def context(try_number: int, task_id: str = "match_entitlements") -> dict:
    ti = SimpleNamespace(dag_id="method1_99001_x_p1", run_id="manual__1", task_id=task_id, try_number=try_number, map_index=-1)
    return {"ti": ti, "params": {}}


def facts() -> list[tuple[str, str | None, str]]:
    with session_scope() as session:
        return [(r.action, r.fact_key, r.message) for r in session.scalars(sa.select(AuditRecord).order_by(AuditRecord.id))]


def test_a_start_that_cannot_be_recorded_fails_the_try(project_db, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", "postgresql+psycopg2://postgres@127.0.0.1:1/none?connect_timeout=2")
    dispose_engines()
    with pytest.raises(sa.exc.OperationalError):
        on_task_start(context(1))


def test_each_try_has_a_start_and_an_outcome_and_the_next_try_closes_gaps(project_db):
    key = "method1_99001_x_p1:manual__1:match_entitlements"
    on_task_start(context(1))
    on_task_retry({**context(1), "exception": ConnectionResetError("server closed the connection")})
    # Try 2 was killed before it could record anything; try 3 says so, once.
    on_task_start(context(3))
    on_task_start(context(3))  # a sensor's next poke: nothing twice
    on_task_success(context(3))
    recorded = facts()
    assert [(a, k) for a, k, _ in recorded] == [
        ("task.started", f"started:{key}:1"), ("task.retried", f"retried:{key}:1"),
        ("task.started", f"started:{key}:3"), ("task.try_unrecorded", f"unrecorded:{key}:2"),
        ("task.succeeded", f"succeeded:{key}:3"),
    ]
    retried, unrecorded = recorded[1][2], recorded[3][2]
    assert "cause" in retried and "runbook" in retried
    assert "try 2" in unrecorded and "no start and no outcome" in unrecorded
