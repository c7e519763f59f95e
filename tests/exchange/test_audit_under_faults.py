"""No gap in the audit trail under faults, through a real scheduler (LocalExecutor).

The project database is a PostgreSQL server of the test's own (``private_postgres``), so it can
be restarted without disturbing other tests. Each test injects one fault while the exchange
runs — a task SIGKILLed, PostgreSQL restarted during a step, the scheduler killed and restarted
— and then checks that the exchange was delivered exactly once and that the trail accounts for
every try Airflow made: each has a start (``task.started``) and an outcome (``task.succeeded``,
``task.retried``, ``task.failed``), or, for a try that could record neither (killed, or its
database down), the next try's ``task.try_unrecorded`` saying so. Recovery time (fault → run
done) is printed, not asserted. Redis restarted under Celery: ``tests/celery/test_celery_faults.py``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.exchange.faults import (
    STEPS_AFTER_FETCH,
    assert_delivered_once_and_every_try_accounted,
    start_exchange,
    wait_until_running,
)


@pytest.fixture
def sqlite_db(private_postgres):
    """Here the Method 1 set-up's project database is the test's own PostgreSQL server."""
    return private_postgres.url


@pytest.mark.slow
@pytest.mark.sftp
@pytest.mark.postgres
def test_a_task_sigkilled_is_retried_and_every_try_is_in_the_audit(method1, airflow_server_factory, monkeypatch):
    # Not deferrable: the arrival wait runs in a worker process, with a settle pause to kill it in.
    monkeypatch.setenv("WELFARE_EXCHANGE_SETTLE_SECONDS", "8")
    airflow, dag_id, run_id = start_exchange(method1, airflow_server_factory, monkeypatch,
                                             AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="False")
    ti = wait_until_running(airflow, dag_id, run_id, ("wait_for_request",))
    time.sleep(1)
    os.kill(ti["pid"], signal.SIGKILL)
    fault = time.monotonic()
    assert_delivered_once_and_every_try_accounted(method1, airflow, dag_id, run_id, faulted=f"{ti['task_id']} SIGKILLed")
    print(f"recovery: run done {time.monotonic() - fault:.1f} s after the kill")


@pytest.mark.slow
@pytest.mark.sftp
@pytest.mark.postgres
def test_postgresql_restarted_during_a_step_leaves_no_gap(method1, airflow_server_factory, monkeypatch, private_postgres):
    airflow, dag_id, run_id = start_exchange(method1, airflow_server_factory, monkeypatch)
    ti = wait_until_running(airflow, dag_id, run_id, STEPS_AFTER_FETCH)
    back = private_postgres.restart(down=3)
    assert_delivered_once_and_every_try_accounted(method1, airflow, dag_id, run_id,
                                                  faulted=f"PostgreSQL restarted during {ti['task_id']}")
    print(f"recovery: run done {time.monotonic() - back:.1f} s after PostgreSQL was back")


@pytest.mark.slow
@pytest.mark.sftp
@pytest.mark.postgres
def test_the_scheduler_killed_and_restarted_leaves_no_gap(method1, airflow_server_factory, monkeypatch):
    airflow, dag_id, run_id = start_exchange(method1, airflow_server_factory, monkeypatch)
    ti = wait_until_running(airflow, dag_id, run_id, STEPS_AFTER_FETCH)
    fault = time.monotonic()
    airflow.restart_component("scheduler")  # SIGKILL to its group: its task processes die with it
    assert_delivered_once_and_every_try_accounted(method1, airflow, dag_id, run_id,
                                                  faulted=f"scheduler killed during {ti['task_id']}")
    print(f"recovery: run done {time.monotonic() - fault:.1f} s after the scheduler was killed")
