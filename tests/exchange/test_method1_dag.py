"""Method 1 end to end with ``dag.test()``, against the real OpenSSH SFTP server on loopback.

The log scanner (tests/fixtures/pii_scan.py) checks every test's output, which includes the
task logs ``dag.test()`` prints: no INSZ may appear in any of them.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.dagutil import task_states
from tests.exchange.builders import encrypted_request, expected_pairs, request_workbook
from tests.exchange.conftest import EXCHANGE_DATE
from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.exchange import steps
from welfare_exchange.runinfo import RunInfo

pytestmark = [pytest.mark.sftp]


def _request(method1, n: int = 120):
    numbers = [number for number, _ in method1.world.children[:n]]
    stranger = insz.make(dt.date(2012, 4, 4), 901)  # valid, not in the store
    too_old = insz.make(dt.date(1990, 4, 4), 902)  # outside the 0–25 window
    bad_checksum = numbers[0][:9] + f"{(int(numbers[0][9:]) + 1) % 100:02d}"
    extras = [stranger, too_old, bad_checksum, "12345", numbers[1]]
    return numbers, stranger, extras


def test_happy_path_delivers_the_expected_pairs_once(method1):
    numbers, stranger, extras = _request(method1)
    method1.municipality.upload_request(encrypted_request(numbers, method1.password, extra_rows=extras), "aanvraag.xlsx")

    run = method1.run()

    assert run.state == "success", task_states(run)
    results = method1.results()
    assert len(results) == 1
    [(name, data)] = results.items()
    sheets = method1.open_result(data)
    rows = sheets["Resultaat"]
    assert rows[0] == ["INSZ kind", "INSZ begunstigde", "Begin periode", "Einde periode (leeg = lopend)"]
    got = [(r[0], r[1], r[2], r[3] or None) for r in rows[1:]]
    expected = expected_pairs(method1.world, set(numbers) | {stranger}, EXCHANGE_DATE)
    assert len(expected) > 10
    assert got == expected, "result rows differ from the independent computation"
    report = {line[0]: line[1] for line in sheets["Validatierapport"][1:]}
    assert sum(report.values()) == 4  # stranger is valid; too old, checksum, short, duplicate are not
    assert "Info" in sheets

    [exchange] = method1.exchanges()
    assert exchange.state == "delivered"
    assert exchange.counts["rows"] == len(numbers) + len(extras)
    assert method1.remote("inbox") == [] and method1.remote("received") == ["aanvraag.xlsx"]
    actions = [a for a, _ in method1.actions()]
    for step in ("request.fetched", "request.validated", "entitlements.matched", "result.built", "request.subjects",
                 "result.subjects", "result.delivered", "retention.scheduled"):
        assert actions.count(step) == 1, step
    # Every task that ran recorded its start once (sensors poke more than once: still one record).
    assert actions.count("task.started") == sum(1 for state in task_states(run).values() if state == "success")
    with session_scope() as session:
        assert audit.verify(session).ok


def test_every_step_rerun_changes_nothing(method1):
    """Clearing any task after success: no second upload, identical bytes, audit intact."""
    numbers, _, extras = _request(method1, n=60)
    method1.municipality.upload_request(encrypted_request(numbers, method1.password, extra_rows=extras), "r.xlsx")
    run = method1.run()
    assert run.state == "success", task_states(run)
    before = method1.results()
    [exchange] = method1.exchanges()
    audit_before = len(method1.actions())

    info = RunInfo(exchange_date=EXCHANGE_DATE, dag_id=run.dag_id, run_id=run.run_id, task_id="rerun", try_number=2)
    assert steps.fetch_request(method1.protocol_id, {"name": "r.xlsx", "size": 0, "mtime": 0}, info) == exchange.id
    steps.decrypt_and_validate(exchange.id, info)
    steps.match_entitlements(exchange.id, info)
    assert steps.build_result(exchange.id, info)["result_sha256"] == exchange.result_sha256
    steps.recheck_gate(exchange.id, info)
    assert steps.deliver_result(exchange.id, info)["already_delivered"] is True
    steps.record_data_subjects(exchange.id, info)
    steps.record_retention(exchange.id, info)

    assert method1.results() == before
    assert len(method1.side_effects("delivered")) == 1
    assert len(method1.actions()) == audit_before  # every fact already recorded: none repeated
    with session_scope() as session:
        assert audit.verify(session).ok


@pytest.mark.parametrize("problem", ["wrong_password", "not_encrypted"])
def test_unprocessable_request_is_quarantined_with_a_report(method1, problem):
    numbers, _, _ = _request(method1, n=30)
    if problem == "wrong_password":
        data = encrypted_request(numbers, method1.password + "x")
    else:
        data = request_workbook(numbers)
    method1.municipality.upload_request(data, "aanvraag.xlsx")

    run = method1.run()

    states = task_states(run)
    assert run.state == "failed"
    assert states["decrypt_and_validate"] == "failed"
    assert states["deliver_result"] != "success"
    assert method1.remote("quarantine") == ["aanvraag.xlsx"]
    outbox = method1.outbox()
    assert not method1.results()
    [(report_name, report)] = outbox.items()
    assert report_name.endswith(".txt") and problem.encode() in report
    [exchange] = method1.exchanges()
    assert exchange.state == "quarantined" and exchange.failure_code == problem
    assert ("request.quarantined", "refused") in method1.actions()
    assert ("task.failed", "failure") in method1.actions()
    # The file was never read: nobody's data to record, and that task says so by succeeding empty.
    assert states["record_data_subjects"] == "success"
    assert not {"request.subjects", "result.subjects"} & {a for a, _ in method1.actions()}


def test_protocol_revoked_between_receipt_and_delivery_blocks_delivery(method1, monkeypatch):
    numbers, _, _ = _request(method1, n=30)
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    original = steps.build_result

    def build_then_revoke(exchange_id, run, **kwargs):
        out = original(exchange_id, run, **kwargs)
        method1.revoke("college decision withdrawn during the exchange")
        return out

    monkeypatch.setattr(steps, "build_result", build_then_revoke)
    run = method1.run()

    states = task_states(run)
    assert run.state == "failed"
    assert states["build_result"] == "success"
    assert states["protocol_gate_before_delivery"] == "failed"
    assert states["deliver_result"] in ("upstream_failed", "None")
    assert method1.outbox() == {}
    assert ("result.delivery_blocked", "refused") in method1.actions()
    # Nothing left the agency, but the request was processed: whose data it held is on record.
    assert states["record_data_subjects"] == "success"
    assert {("request.subjects", "success"), ("result.subjects", "success")} <= set(method1.actions())


def test_revoked_protocol_fails_at_the_gate_reading_nothing(method1):
    numbers, _, _ = _request(method1, n=10)
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    method1.revoke()
    run = method1.run()
    assert run.state == "failed"
    assert task_states(run)["protocol_gate"] == "failed"
    assert method1.remote("inbox") == ["aanvraag.xlsx"] and method1.exchanges() == []


def test_same_file_twice_is_a_duplicate_and_two_files_are_two_exchanges_oldest_first(method1):
    numbers, _, _ = _request(method1, n=20)
    first = encrypted_request(numbers, method1.password)
    second = encrypted_request(numbers[:10], method1.password)
    method1.municipality.upload_request(first, "a-first.xlsx")
    method1.municipality.upload_request(second, "b-second.xlsx")
    # Make sure the second is younger even on coarse clocks.
    import os
    import time

    inbox = method1.municipality.account.local_dir("inbox")
    os.utime(inbox / "a-first.xlsx", (time.time() - 60, time.time() - 60))

    assert method1.run(dt.datetime(2026, 11, 2, 9, tzinfo=dt.timezone.utc)).state == "success"
    assert method1.run(dt.datetime(2026, 11, 2, 10, tzinfo=dt.timezone.utc)).state == "success"
    exchanges = method1.exchanges()
    assert [e.request_name for e in exchanges] == ["a-first.xlsx", "b-second.xlsx"]
    assert len(method1.results()) == 2

    method1.municipality.upload_request(first, "a-again.xlsx")
    run = method1.run(dt.datetime(2026, 11, 2, 11, tzinfo=dt.timezone.utc))
    assert run.state == "success"
    assert task_states(run)["fetch_request"] == "skipped"
    assert len(method1.exchanges()) == 2 and len(method1.results()) == 2
    assert ("request.duplicate", "duplicate") in method1.actions()


def test_a_request_named_after_a_child_leaks_the_number_nowhere(method1):
    """Municipalities name their files: a name holding an INSZ reaches no log, XCom or audit text.

    The log scanner checks this test's output, which holds every task log of the run.
    """
    numbers, _, _ = _request(method1, n=20)
    name = f"aanvraag {numbers[0]}.xlsx"
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), name)

    run = method1.run()

    assert run.state == "success", task_states(run)
    pushed = [str(ti.xcom_pull(task_ids="wait_for_request")) for ti in run.get_task_instances() if ti.task_id == "fetch_request"]
    assert pushed and "name_sha256" in pushed[0] and not any(insz.find_insz_shaped(v) for v in pushed)
    with session_scope() as session:
        texts = " ".join(str(r.message) for r in session.scalars(sa.select(AuditRecord)))
    assert not insz.find_insz_shaped(texts)
    assert method1.remote("received") == [name]


def test_the_staged_request_goes_at_the_request_deadline_not_with_the_result(method1):
    """Staging keeps the encrypted result until the result's deadline (a re-delivery sends it);
    the agency's copy of the request in the same folder must go at the request's own deadline."""
    from welfare_exchange.db.models import Protocol
    from welfare_exchange.retention import runner
    from welfare_exchange.staging import Staging

    numbers, _, _ = _request(method1, n=20)
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    assert method1.run().state == "success"
    [exchange] = method1.exchanges()
    with session_scope() as session:
        request_days = session.get(Protocol, method1.protocol_id).request_retention_days
    staging = Staging(method1.protocol_id, exchange.id)
    deadline = exchange.exchange_date + dt.timedelta(days=request_days)

    runner.delete_due(deadline - dt.timedelta(days=1), actor=audit.Actor.current_user())
    assert staging.request_path().exists()
    report = runner.delete_due(deadline, actor=audit.Actor.current_user())
    assert {c.kind for c in report.certificates} == {"request_file"}  # the staged copy and received/
    assert not staging.request_path().exists() and staging.path("result.xlsx").exists()
    assert method1.remote("received") == []


def test_delete_the_request_as_soon_as_matching_is_done_happens_in_the_run(method1):
    """A protocol that says so: both copies of the request are gone, with certificates, when the
    run ends — not at the next daily retention run. The result stays."""
    from welfare_exchange.db.models import Protocol
    from welfare_exchange.staging import Staging

    with session_scope() as session:
        session.get(Protocol, method1.protocol_id).delete_request_after_match = True
    numbers, _, _ = _request(method1, n=20)
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")

    run = method1.run()

    assert run.state == "success", task_states(run)
    [exchange] = method1.exchanges()
    assert method1.remote("received") == [] and len(method1.results()) == 1
    staging = Staging(method1.protocol_id, exchange.id)
    assert not staging.request_path().exists() and staging.path("result.xlsx").exists()
    with session_scope() as session:
        certificates = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "retention.deleted")).all()
    assert len(certificates) == 2 and all("as soon as matching is done" in c.message for c in certificates)


def test_a_request_named_after_a_person_leaves_the_name_out_of_the_audit(method1):
    """Not only numbers: a file named after a parent appears in audit text only as its handle."""
    from welfare_exchange.transport import sftp

    numbers, _, _ = _request(method1, n=20)
    name = "aanvraag familie Peeters.xlsx"
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), name)

    assert method1.run().state == "success"

    with session_scope() as session:
        texts = " ".join(str(r.message) for r in session.scalars(sa.select(AuditRecord)))
    assert "Peeters" not in texts
    assert f"#{sftp.name_handle(name)[:12]}" in texts  # what an operator who has the file can match
    [result_name] = method1.results()
    assert sftp.shown(f"outbox/{result_name}") == f"outbox/{result_name}"  # the agency's own names stay
