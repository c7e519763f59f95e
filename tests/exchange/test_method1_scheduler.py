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
from welfare_exchange.orchestration.dag_factory import method1_dag_id
from welfare_exchange.protocols import registry
from welfare_exchange.settings import REPO_ROOT

TASKS = [
    "protocol_gate", "wait_for_request", "fetch_request", "decrypt_and_validate", "match_entitlements",
    "build_result", "protocol_gate_before_delivery", "deliver_result", "record_data_subjects", "record_retention",
    "send_receipt",
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


@pytest.mark.slow
@pytest.mark.sftp
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "reschedule"])
def test_an_empty_inbox_ends_skipped_run_after_run_under_the_scheduler(method1, airflow_server_factory, monkeypatch,
                                                                       deferrable):
    """Three runs in a row, a 20 s window and 2 s looks: each ends with wait_for_request and
    everything after it skipped, the audit says "no request arrived", no try fails. Rescheduled
    looks keep the deployment's floor (15 s), which keeps them clear of apache/airflow#71172."""
    import os

    for name, value in {"WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS": "20", "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "2",
                        "WELFARE_EXCHANGE_SETTLE_SECONDS": "1", "WELFARE_EXCHANGE_TASK_RETRIES": "2"}.items():
        monkeypatch.setenv(name, value)
    with session_scope() as session:
        registry.write_snapshot(session)
        entry = next(p for p in registry.snapshot(session) if p["id"] == method1.protocol_id)
    dag_id = method1_dag_id(entry)
    env = {k: v for k, v in os.environ.items() if k.startswith(("WELFARE_EXCHANGE_", "AIRFLOW_CONN_"))}
    env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = str(deferrable)
    airflow = airflow_server_factory(dags_folder=REPO_ROOT / "dags", env=env)
    airflow.wait_for_dag(dag_id, timeout=180)
    airflow.unpause(dag_id)

    for day in (2, 3, 4):
        run_id = airflow.trigger(dag_id, logical_date=dt.datetime(2026, 11, day, 9, tzinfo=dt.timezone.utc))
        assert airflow.wait_for_run(dag_id, run_id, timeout=180) == "success", airflow.why(dag_id, run_id)
        states = airflow.task_states(dag_id, run_id)
        assert states.pop("protocol_gate") == "success", states
        assert set(states.values()) == {"skipped"}, states

    with session_scope() as session:
        facts = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "request.none_arrived")).all()
        tries = [(r.run_id, r.task_id, r.try_number, r.action, r.outcome, r.message) for r in session.scalars(
            sa.select(AuditRecord).where(AuditRecord.task_id == "wait_for_request").order_by(AuditRecord.id))]
        assert len(facts) == 3 and {f.outcome for f in facts} == {"skipped"}, tries
        assert all(f.message.startswith("no request arrived in the SFTP inbox between ") for f in facts)
        assert not session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "task.failed")).all()
        assert session.scalar(sa.select(sa.func.count()).select_from(Exchange)) == 0
        assert audit.verify(session).ok
