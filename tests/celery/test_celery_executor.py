"""The distributed path, proven here: a Method 1 exchange through the CeleryExecutor.

Airflow's metadata DB and the project DB on PostgreSQL, Redis as the Celery broker, a real
``airflow celery worker`` process next to the scheduler, DAG processor, triggerer and API
server; the run is triggered through the REST API and must succeed with the encrypted result
in the municipality's outbox — every task executed by the Celery worker, from its own queue.
Slow (~2–3 min on 2 cores). Redis or PostgreSQL down: the test fails.
"""

from __future__ import annotations

import pytest

from tests.exchange.builders import encrypted_request, expected_pairs
from tests.exchange.conftest import EXCHANGE_DATE, LOGICAL_DATE
from tests.fixtures.pii_scan import assert_no_insz_in_files
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.settings import REPO_ROOT


TASKS = (
    "protocol_gate", "wait_for_request", "fetch_request", "decrypt_and_validate", "match_entitlements",
    "build_result", "protocol_gate_before_delivery", "deliver_result", "record_data_subjects", "record_retention",
    "send_receipt",
)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.sftp
def test_method1_exchange_runs_on_a_celery_worker(method1, celery_airflow):
    assert method1.exchanges() is not None  # the project DB answers (it is PostgreSQL here)
    dag_id = method1.dag().dag_id  # also writes the registry snapshot the DAG file reads
    numbers = [number for number, _ in method1.world.children[:80]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")

    cluster = celery_airflow(REPO_ROOT / "dags")
    af = cluster.server
    af.wait_for_dag(dag_id, timeout=180)
    af.unpause(dag_id)
    run_id = af.trigger(dag_id, logical_date=LOGICAL_DATE)
    state = af.wait_for_run(dag_id, run_id, timeout=600)

    tis = af.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{af._q(run_id)}/taskInstances").json()["task_instances"]
    assert state == "success", {ti["task_id"]: ti["state"] for ti in tis}
    assert {ti["task_id"]: ti["state"] for ti in tis} == dict.fromkeys(TASKS, "success")
    # Every task went through Celery: the CeleryExecutor put it on our queue, our worker ran it.
    assert {ti["queue"] for ti in tis} == {cluster.queue}
    assert {ti["executor"] for ti in tis} <= {None, "CeleryExecutor"}
    assert "execute_workload" in cluster.worker_log()

    [(name, data)] = method1.results().items()
    rows = method1.open_result(data)["Resultaat"]
    got = [(r[0], r[1], r[2], r[3] or None) for r in rows[1:]]
    assert got == expected_pairs(method1.world, set(numbers), EXCHANGE_DATE)
    [exchange] = method1.exchanges()
    assert exchange.state == "delivered" and exchange.run_id == run_id
    assert len(method1.side_effects("delivered")) == 1
    with session_scope() as session:
        assert audit.verify(session).ok
    assert assert_no_insz_in_files(af.task_log_dir()) > 0
    assert_no_insz_in_files(af.process_log_dir)


def test_an_unreachable_redis_fails_the_test_instead_of_skipping(monkeypatch):
    from tests.celery import conftest

    monkeypatch.setattr(conftest, "REDIS_URL", "redis://127.0.0.1:1/13")
    with pytest.raises(pytest.fail.Exception, match="Redis is not reachable"):
        conftest.require_redis()
