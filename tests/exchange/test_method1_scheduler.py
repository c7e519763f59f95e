"""Method 1 through a real scheduler: trigger over the REST API, then clear every task one by
one as an operator would in the UI — the exchange is delivered exactly once, the result bytes
never change, the audit chain stays intact, and no task log holds an INSZ."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.exchange.builders import encrypted_request
from tests.fixtures.pii_scan import assert_no_insz_in_files
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, SideEffect
from welfare_exchange.exchange.dag_factory import method1_dag_id
from welfare_exchange.protocols import registry
from welfare_exchange.settings import REPO_ROOT

TASKS = [
    "protocol_gate", "wait_for_request", "fetch_request", "decrypt_and_validate", "match_entitlements",
    "build_result", "protocol_gate_before_delivery", "deliver_result", "record_data_subjects", "record_retention",
]


@pytest.mark.slow
@pytest.mark.sftp
def test_clearing_every_task_after_success_delivers_once(method1, airflow_server_factory, monkeypatch):
    import os

    numbers = [n for n, _ in method1.world.children[:100]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    with session_scope() as session:
        registry.write_snapshot(session)
        entry = next(p for p in registry.snapshot(session) if p["id"] == method1.protocol_id)
    dag_id = method1_dag_id(entry)
    # The Airflow processes get exactly the test's settings and connections.
    env = {k: v for k, v in os.environ.items() if k.startswith(("WELFARE_EXCHANGE_", "AIRFLOW_CONN_"))}
    airflow = airflow_server_factory(dags_folder=REPO_ROOT / "dags", env=env)
    airflow.wait_for_dag(dag_id, timeout=180)
    airflow.unpause(dag_id)

    run_id = airflow.trigger(dag_id, logical_date=dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc))
    assert airflow.wait_for_run(dag_id, run_id, timeout=300) == "success", airflow.task_states(dag_id, run_id)
    first = method1.results()
    assert len(first) == 1

    for task_id in TASKS:
        assert airflow.clear_task(dag_id, run_id, task_id) == [task_id]
        state = airflow.wait_for_run(dag_id, run_id, timeout=300)
        assert state == "success", (task_id, airflow.task_states(dag_id, run_id))
        assert method1.results() == first, f"result changed after clearing {task_id}"

    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Exchange)) == 1
        delivered = session.scalars(sa.select(SideEffect).where(SideEffect.kind == "delivered")).all()
        assert len(delivered) == 1 and delivered[0].state == "done"
        facts = session.scalars(sa.select(AuditRecord.action).where(AuditRecord.action == "result.delivered")).all()
        assert len(facts) == 1
        assert audit.verify(session).ok
    assert assert_no_insz_in_files(airflow.task_log_dir()) > 0
