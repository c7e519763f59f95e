"""Helpers of the fault tests: run one Method 1 exchange through Airflow, find a running try,
and check afterwards that it was delivered once and that the audit trail accounts for every try."""

from __future__ import annotations

import datetime as dt
import os
import time

import sqlalchemy as sa

from tests.exchange.builders import encrypted_request
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, SideEffect
from welfare_exchange.orchestration.dag_factory import method1_dag_id
from welfare_exchange.protocols import registry
from welfare_exchange.settings import REPO_ROOT

LOGICAL = dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc)
STEPS_AFTER_FETCH = ("decrypt_and_validate", "match_entitlements", "build_result", "deliver_result")


def airflow_env(**extra) -> dict:
    """The test's settings and connections for the Airflow processes, plus fast failure detection."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("WELFARE_EXCHANGE_", "AIRFLOW_CONN_"))}
    env.update({
        # A try whose process died with the scheduler is found within seconds, not 5 minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # A restarted scheduler adopts (or resets) the tries its dead predecessor left running
        # on this check, every 5 minutes by default.
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        **extra,
    })
    return env


def upload_and_snapshot(method1, monkeypatch) -> str:
    """Retries enough to ride out a fault; the request uploaded; returns the DAG id."""
    for name, value in {"WELFARE_EXCHANGE_TASK_RETRIES": "6", "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "1"}.items():
        monkeypatch.setenv(name, value)
    numbers = [n for n, _ in method1.world.children[:100]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    with session_scope() as session:
        registry.write_snapshot(session)
        entry = next(p for p in registry.snapshot(session) if p["id"] == method1.protocol_id)
    return method1_dag_id(entry)


def start_exchange(method1, airflow_server_factory, monkeypatch, **env_extra):
    """A LocalExecutor Airflow running the exchange; ``(airflow, dag id, run id)``."""
    dag_id = upload_and_snapshot(method1, monkeypatch)
    airflow = airflow_server_factory(dags_folder=REPO_ROOT / "dags", env=airflow_env(**env_extra))
    airflow.wait_for_dag(dag_id, timeout=180)
    airflow.unpause(dag_id)
    return airflow, dag_id, airflow.trigger(dag_id, logical_date=LOGICAL)


def wait_until_running(airflow, dag_id, run_id, task_ids, timeout=180) -> dict:
    """The first of ``task_ids`` seen running with a process id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ti in airflow.task_instances(dag_id, run_id):
            if ti["task_id"] in task_ids and ti["state"] == "running" and ti.get("pid"):
                return ti
        time.sleep(0.1)
    raise AssertionError(f"none of {task_ids} ran within {timeout} s: {airflow.task_states(dag_id, run_id)}")


def assert_delivered_once_and_every_try_accounted(method1, airflow, dag_id, run_id, *, faulted: str,
                                                  require_retry: bool = True) -> None:
    """``require_retry``: the fault must have failed a try (a Redis restart may cost none: the
    running try does not need the broker)."""
    assert airflow.wait_for_run(dag_id, run_id, timeout=420) == "success", airflow.task_states(dag_id, run_id)
    assert len(method1.results()) == 1
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Exchange)) == 1
        delivered = session.scalars(sa.select(SideEffect).where(SideEffect.kind == "delivered")).all()
        assert len(delivered) == 1 and delivered[0].state == "done"
        keys = set(session.scalars(sa.select(AuditRecord.fact_key).where(AuditRecord.fact_key.is_not(None))))
        started = session.scalar(sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "task.started"))
        assert audit.verify(session).ok
    tries, gaps = 0, []
    for ti in airflow.task_instances(dag_id, run_id):
        for number in range(1, (ti["try_number"] or 0) + 1):
            tries += 1
            key = f"{dag_id}:{run_id}:{ti['task_id']}:{number}"
            last = number == ti["try_number"]
            start = f"started:{key}" in keys or f"unrecorded:{key}" in keys
            outcome = (f"succeeded:{key}" in keys if last and ti["state"] == "success"
                       else f"retried:{key}" in keys or f"unrecorded:{key}" in keys)
            if not (start and outcome):
                gaps.append((ti["task_id"], number, "start" if not start else "outcome"))
    unrecorded = sum(1 for k in keys if k.startswith(f"unrecorded:{dag_id}:{run_id}:"))
    print(f"\n{faulted}: {tries} tries, {started} start facts, {unrecorded} tries closed by the next one's start")
    assert gaps == [], gaps
    if require_retry:
        assert tries > sum(1 for ti in airflow.task_instances(dag_id, run_id) if ti["try_number"]), "the fault caused no retry"


