"""A failure on the agency's side never answers the municipality with a refusal.

Real runs (``dag.test()``, the real OpenSSH server): a missing key connection, and a worker
out of memory while reading the request, fail the task with their cause and the exchange in the
``task.failed`` fact — and leave the request where it was, with nothing in ``quarantine/`` or
``outbox/``. Once the cause is fixed the same exchange goes on to its one result, and the
municipality's outbox holds that result and nothing else. The mechanism itself (the
quarantine that reports) refuses an agency-side error.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.exchange.builders import encrypted_request
from tests.exchange.conftest import EXCHANGE_DATE
from welfare_exchange import failures
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.errors import AgencySideError
from welfare_exchange.exchange import steps
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.intake import reader
from welfare_exchange.intake.failures import IntakeError

pytestmark = [pytest.mark.sftp]

AFTER_FETCH = ("decrypt_and_validate", "match_entitlements", "build_result", "record_data_subjects",
               "protocol_gate_before_delivery", "deliver_result", "record_retention")
STEPS = {"decrypt_and_validate": steps.decrypt_and_validate, "match_entitlements": steps.match_entitlements,
         "build_result": steps.build_result, "record_data_subjects": steps.record_data_subjects,
         "protocol_gate_before_delivery": steps.recheck_gate, "deliver_result": steps.deliver_result,
         "record_retention": steps.record_retention}


def _failed_facts() -> list[AuditRecord]:
    with session_scope() as session:
        return list(session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "task.failed")))


def _carry_on(run, exchange_id: int) -> None:
    """The retry: the failed task and its downstream, as Airflow runs them once cleared."""
    for task_id in AFTER_FETCH:
        STEPS[task_id](exchange_id, RunInfo(EXCHANGE_DATE, run.dag_id, run.run_id, task_id, 2))


def _nothing_refused(method1) -> None:
    assert method1.outbox() == {}, "the municipality was sent something"
    assert method1.remote("quarantine") == []
    assert ("request.quarantined", "refused") not in method1.actions()


def test_a_missing_key_connection_fails_with_its_cause_reports_nothing_and_the_retry_delivers_once(method1, monkeypatch):
    numbers = [n for n, _ in method1.world.children[:60]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    key_variable = f"AIRFLOW_CONN_KEY_{method1.municipality.nis}"
    monkeypatch.delenv(key_variable)

    run = method1.run()

    assert run.state == "failed"
    [exchange] = method1.exchanges()
    assert exchange.state == "received" and exchange.failure_code is None
    _nothing_refused(method1)
    assert method1.remote("received") == ["aanvraag.xlsx"]
    [fact] = _failed_facts()
    recorded = failures.parse_fact_message(fact.message)
    assert (fact.task_id, fact.exchange_id, fact.protocol_id) == ("decrypt_and_validate", exchange.id, method1.protocol_id)
    assert (recorded.cause, recorded.section) == ("key_connection_missing", "The key connection is missing or wrong")

    monkeypatch.setenv(key_variable, json.dumps({"conn_type": "generic", "password": method1.password}))
    _carry_on(run, exchange.id)

    [exchange] = method1.exchanges()
    assert exchange.state == "delivered"
    assert list(method1.outbox()) == list(method1.results()) and len(method1.results()) == 1
    assert method1.actions().count(("result.delivered", "success")) == 1


def test_a_worker_out_of_memory_while_reading_is_retried_never_refused(method1, monkeypatch):
    """The parser wraps whatever breaks as a damaged file; an out-of-memory worker is not one."""
    numbers = [n for n, _ in method1.world.children[:60]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    monkeypatch.setenv("WELFARE_EXCHANGE_TASK_RETRIES", "0")
    opened = reader.CalamineWorkbook.from_filelike

    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(reader.CalamineWorkbook, "from_filelike", out_of_memory)
    run = method1.run()

    assert run.state == "failed"
    [exchange] = method1.exchanges()
    assert exchange.state == "received"
    _nothing_refused(method1)
    [fact] = _failed_facts()
    assert failures.parse_fact_message(fact.message).cause == "out_of_memory" and fact.exchange_id == exchange.id

    monkeypatch.setattr(reader.CalamineWorkbook, "from_filelike", opened)
    _carry_on(run, exchange.id)
    assert method1.exchanges()[0].state == "delivered"
    assert list(method1.outbox()) == list(method1.results()) and len(method1.results()) == 1


def test_the_quarantine_refuses_to_report_an_agency_failure(method1):
    numbers = [n for n, _ in method1.world.children[:20]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    run = RunInfo(EXCHANGE_DATE, "method1_test", "manual__agency_side", "fetch_request", 1)
    exchange_id = steps.fetch_request(method1.protocol_id, {"name": "aanvraag.xlsx"}, run)

    def parse():
        try:
            raise MemoryError()
        except MemoryError as exc:
            raise IntakeError("corrupt") from exc

    with pytest.raises(AgencySideError, match="out_of_memory is a failure on the agency's side"):
        try:
            parse()
        except IntakeError as err:
            steps.quarantine(exchange_id, err, run)

    _nothing_refused(method1)
    assert method1.side_effects("report_delivered") == [] and method1.exchanges()[0].state == "received"
