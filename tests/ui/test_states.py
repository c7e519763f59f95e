"""The true state of an exchange from Airflow's run and the ledger, case by case (plain values)."""

from __future__ import annotations

import datetime as dt

from welfare_exchange.orchestration.airflow_api import Run, Task
from welfare_exchange.ui.states import Delivery, FailureFact, Ledger, derive

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
WINDOW = dt.timedelta(hours=2)
METHOD1 = ("protocol_gate", "wait_for_request", "fetch_request", "decrypt_and_validate", "match_entitlements",
           "build_result", "protocol_gate_before_delivery", "deliver_result", "record_data_subjects", "record_retention")


def _run(state: str = "running", **task_states: str | None) -> Run:
    tasks = []
    for i, task_id in enumerate(METHOD1):
        value = task_states.get(task_id)
        started = T0 + dt.timedelta(minutes=i) if value is not None else None
        ended = started + dt.timedelta(seconds=30) if value in ("success", "failed", "skipped") else None
        tasks.append(Task(task_id, value, started, ended, 1))
    return Run("method1_99001_x_p1", "manual__1", state, T0, T0, None, tuple(tasks))


def _received(state: str = "received", code: str | None = None) -> Ledger:
    return Ledger(state, code, T0 + dt.timedelta(minutes=3))


def test_a_run_waiting_for_the_request_says_since_and_until():
    s = derive(run=_run(protocol_gate="success", wait_for_request="deferred"), ledger=None, window=WINDOW)
    assert (s.state, s.step, s.label) == ("waiting", "wait_for_request", "waiting for the request")
    assert (s.since, s.until) == ("2026-11-02T09:01:00+00:00", "2026-11-02T11:01:00+00:00")
    assert s.sources == ["airflow"] and not s.retryable


def test_waiting_for_the_protocol_gate():
    s = derive(run=_run(protocol_gate="up_for_reschedule"), ledger=None)
    assert s.state == "waiting" and "protocol gate" in s.label


def test_running_names_the_step_and_a_retry_in_progress():
    busy = derive(run=_run(protocol_gate="success", wait_for_request="success", fetch_request="success",
                           decrypt_and_validate="success", match_entitlements="running"), ledger=_received("validated"))
    assert (busy.state, busy.step, busy.label) == ("running", "match_entitlements", "matching against the entitlement store")
    retrying = derive(run=_run(protocol_gate="success", wait_for_request="success", fetch_request="up_for_retry"), ledger=None)
    assert retrying.state == "running" and retrying.label.startswith("retrying fetch_request")


def test_a_failure_shows_task_cause_runbook_and_when():
    fact = FailureFact("key_connection_missing", "The key connection is missing or wrong", T0)
    run = _run("failed", protocol_gate="success", wait_for_request="success", fetch_request="success",
               decrypt_and_validate="failed", match_entitlements="upstream_failed", record_data_subjects="success")
    s = derive(run=run, ledger=_received(), facts={"decrypt_and_validate": fact})
    assert s.state == "failed" and s.retryable
    assert s.failure["task_id"] == "decrypt_and_validate" and s.failure["cause"] == "key_connection_missing"
    assert s.failure["runbook"] == "docs/RUNBOOK.md § 'The key connection is missing or wrong'"
    assert s.failure["at"] == "2026-11-02T09:03:30+00:00"
    # Still finishing a task beside it: failed, but not retried until the run stopped.
    busy = _run("running", fetch_request="success", decrypt_and_validate="failed", record_data_subjects="running")
    assert derive(run=busy, ledger=_received(), facts={"decrypt_and_validate": fact}).retryable is False


def test_a_recovered_exchange_shows_no_stale_reason():
    """Cleared for a retry, the failed task runs again: the old fact is still in the audit, not in the view."""
    fact = FailureFact("key_connection_missing", "The key connection is missing or wrong", T0)
    run = _run("queued", protocol_gate="success", wait_for_request="success", fetch_request="success", decrypt_and_validate="queued")
    s = derive(run=run, ledger=_received(), facts={"decrypt_and_validate": fact})
    assert s.state == "running" and s.failure is None and "key_connection" not in s.label


def test_refused_delivered_duplicate_and_no_request():
    quarantined = derive(run=_run("failed", decrypt_and_validate="failed"), ledger=_received("quarantined", "not_encrypted"))
    assert (quarantined.state, quarantined.refusal, quarantined.retryable) == ("quarantined", "not_encrypted", False)

    delivery = Delivery(T0 + dt.timedelta(minutes=9), "groeipakket_resultaat_99001_exchange-1_2026-11-02.xlsx", 12800, "ab" * 32)
    delivered = derive(run=_run("success", record_retention="success"), ledger=Ledger("delivered", None, T0, delivery))
    assert delivered.state == "delivered" and delivered.delivery == {
        "at": "2026-11-02T09:09:00+00:00", "file": delivery.file, "size": 12800, "sha256": "ab" * 32}
    later = derive(run=_run("failed", deliver_result="success", record_retention="failed"), ledger=Ledger("delivered", None, T0, delivery))
    assert later.state == "delivered" and later.retryable and later.failure["task_id"] == "record_retention"

    assert derive(run=None, ledger=_received("duplicate")).state == "duplicate"
    ended = _run("success", protocol_gate="success", wait_for_request="skipped", fetch_request="skipped")
    assert derive(run=ended, ledger=None).state == "no_request"
    assert derive(run=ended, ledger=None, outcome="duplicate").state == "duplicate"


def test_overdue_only_where_a_deadline_exists_and_not_yet_delivered():
    due = T0 + dt.timedelta(days=5)
    running = _run(protocol_gate="success", wait_for_request="success", fetch_request="running")
    assert derive(run=running, ledger=None, due=due, now=due + dt.timedelta(hours=1)).state == "overdue"
    assert derive(run=running, ledger=None, due=due, now=due - dt.timedelta(hours=1)).state == "running"
    assert derive(run=running, ledger=None, now=T0 + dt.timedelta(days=400)).state == "running"


def test_without_airflow_the_ledger_speaks_and_says_so():
    s = derive(run=None, ledger=_received("matched"))
    assert s.state == "unknown" and "entitlements matched" in s.label and s.sources == ["ledger"]
    closed = derive(run=None, ledger=_received("failed", "protocol_closed"))
    assert closed.state == "failed" and closed.failure["section"] == "The protocol gate failed" and not closed.retryable
