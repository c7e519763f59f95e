"""Retention against the real OpenSSH SFTP server: files really gone, certificates in the audit,
re-runs idempotent, an outage fails the run (items stay due) and the next run deletes.

The retention DAG runs with ``dag.test()`` on chosen logical dates: the clock is never read.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.dagutil import load_dag_file, task_states
from tests.exchange.builders import encrypted_request
from tests.exchange.conftest import EXCHANGE_DATE
from tests.retention.helpers import ACTOR, item, records, schedule, signed_protocol, staging_with_files, verify
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import RetentionItem
from welfare_exchange.retention import runner
from welfare_exchange.transport import sftp

pytestmark = [pytest.mark.sftp]

def retention_dag():
    """The DAG as the DAG file builds it (re-read, so default args follow the test's environment)."""
    return load_dag_file("retention").retention_dag


def run_on(day: dt.date):
    return retention_dag().test(logical_date=dt.datetime(day.year, day.month, day.day, 3, 0, tzinfo=dt.timezone.utc))


def _pending() -> list[RetentionItem]:
    with session_scope() as session:
        return list(session.scalars(sa.select(RetentionItem).where(RetentionItem.deleted_at.is_(None))))


def test_after_an_exchange_every_file_is_deleted_on_its_deadline_with_certificates(method1):
    numbers = [n for n, _ in method1.world.children[:40]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    assert method1.run().state == "success"
    [exchange] = method1.exchanges()
    assert method1.remote("received") == ["aanvraag.xlsx"] and len(method1.results()) == 1

    # Request: 30 days after the exchange; result and staging: 90 days.
    run = run_on(EXCHANGE_DATE + dt.timedelta(days=30))
    assert run.state == "success", task_states(run)
    assert method1.remote("received") == [] and len(method1.results()) == 1
    # Both copies of the request: received/ on the server and the agency's staged (encrypted) one.
    certs = records("retention.deleted")
    assert len(certs) == 2 and all(c.outcome == "success" for c in certs)
    assert all(c.file_hashes == {"request_file": exchange.request_sha256} and "30 days after receipt" in c.message for c in certs)
    # The municipality's file name only as its handle; what was checked, in full.
    assert sorted(f"file received/{sftp.shown('aanvraag.xlsx')} on connection" in c.message for c in certs) == [False, True]
    assert not any("aanvraag" in c.message for c in certs)
    assert all(f"SHA-256 {exchange.request_sha256} matched" in c.message for c in certs)

    run = run_on(EXCHANGE_DATE + dt.timedelta(days=90))
    assert run.state == "success", task_states(run)
    assert method1.outbox() == {}
    certs = {r.message.split(")")[0].split(": ")[1]: r for r in records("retention.deleted")}
    assert set(certs) == {"request_file (sftp", "request_file (local", "result_file (sftp", "report (sftp", "staging (local"}
    assert certs["result_file (sftp"].file_hashes == {"result_file": exchange.result_sha256}
    assert all(c.exchange_id == exchange.id and c.protocol_id == method1.protocol_id for c in certs.values())

    # Run the same day again, and the day after: no file is deleted or certified twice.
    before = len(records("retention.deleted"))
    for day in (90, 90, 91, 92):
        assert run_on(EXCHANGE_DATE + dt.timedelta(days=day)).state == "success"
    kinds = [r.message.split(" (")[0].removeprefix("deletion certificate: ") for r in records("retention.deleted")]
    assert len(kinds) == before + 1 and kinds[-1] == "ledger_payload"  # the ledger's file names, once
    assert _pending() == []
    assert verify()


def test_a_result_the_municipality_already_removed_is_reported_missing_not_certified(method1):
    numbers = [n for n, _ in method1.world.children[:20]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "r.xlsx")
    assert method1.run().state == "success"
    [name] = method1.results()
    with method1.municipality.sftp() as client:  # downloaded and removed, as a careful DPO does
        client.remove(f"outbox/{name}")

    report = runner.delete_due(EXCHANGE_DATE + dt.timedelta(days=90), actor=ACTOR)

    # The receipt (a report without personal data) left in the outbox goes at the same deadline.
    assert {c.kind: c.outcome for c in report.certificates} == {
        "request_file": "deleted", "staging": "deleted", "report": "deleted"}
    assert len(report.missing) == 1 and not any(r.file_hashes and "result_file" in r.file_hashes for r in records("retention.deleted"))
    [missing] = records("retention.missing")
    assert missing.file_hashes == {"result_file": method1.exchanges()[0].result_sha256} and f"outbox/{name}" in missing.message


def test_a_different_file_under_the_recorded_name_is_left_alone(sqlite_db, sftp_municipality):
    """Someone replaced the recorded file by another with the same name: it is not ours to delete."""
    m = sftp_municipality
    pid = signed_protocol(nis=m.nis)
    hook = m.hook()
    digest, size = sftp.upload_bytes(hook, b"the request as received", "received", "aanvraag.xlsx")
    sftp.delete(hook, "received/aanvraag.xlsx")
    sftp.upload_bytes(hook, b"a different file, same name", "received", "aanvraag.xlsx")
    renamed_ours = sftp.upload_bytes(hook, b"the request as received", "received", "aanvraag-1.xlsx")
    assert renamed_ours[0] == digest
    day = dt.date(2027, 2, 1)
    item_id = schedule(pid, None, "request_file", "sftp", f"{m.conn_id}:received/aanvraag.xlsx", day, sha256=digest)
    with session_scope() as session:
        session.get(RetentionItem, item_id).size = size

    report = runner.delete_due(day, actor=ACTOR)

    assert [c.item_id for c in report.certificates] == [item_id]
    assert f"received/{sftp.shown('aanvraag-1.xlsx')}" in report.certificates[0].verified
    assert sorted(p.name for p in m.local_dir("received").iterdir()) == ["aanvraag.xlsx"]
    assert (m.local_dir("received") / "aanvraag.xlsx").read_bytes() == b"a different file, same name"


def test_sftp_outage_fails_the_run_items_stay_due_and_the_next_run_deletes(sqlite_db, sftp_municipality, monkeypatch):
    m = sftp_municipality
    monkeypatch.setenv("WELFARE_EXCHANGE_TASK_RETRIES", "0")  # let dag.test() show the failed try
    pid = signed_protocol(nis=m.nis)
    hook = m.hook()
    digest, _ = sftp.upload_bytes(hook, b"encrypted result", "outbox", "resultaat.xlsx")
    request, _ = sftp.upload_bytes(hook, b"encrypted request", "received", "aanvraag.xlsx")
    refused, _ = sftp.upload_bytes(hook, b"report", "quarantine", "oud.xlsx")
    day = dt.date(2027, 2, 1)
    remote = [
        schedule(pid, None, "result_file", "sftp", f"{m.conn_id}:outbox/resultaat.xlsx", day, sha256=digest),
        schedule(pid, None, "request_file", "sftp", f"{m.conn_id}:received/aanvraag.xlsx", day, sha256=request),
        schedule(pid, None, "quarantine", "sftp", f"{m.conn_id}:quarantine/oud.xlsx", day, sha256=refused),
    ]
    staging = staging_with_files(pid, 0, "leftover.fernet")
    local = schedule(pid, None, "staging", "local", str(staging.folder), day)

    m.server.stop()
    try:
        run = run_on(day)
        assert run.state == "failed"
        assert task_states(run)["delete_due_items"] == "failed"
        assert task_states(run)["prune_audit_trail"] == "success"  # the audit's term does not wait
        assert all(item(i).deleted_at is None for i in remote)  # still due, not skipped
        assert item(local).deletion_outcome == "deleted"  # the rest was done
        [failure] = records("task.failed")
        assert "could not be deleted and stay due" in failure.message and m.conn_id in failure.message
    finally:
        m.server.start()
    assert sorted(p.name for p in m.local_dir("outbox").iterdir()) == ["resultaat.xlsx"]

    run = run_on(day + dt.timedelta(days=1))
    assert run.state == "success", task_states(run)
    assert all(item(i).deletion_outcome == "deleted" for i in remote)
    for folder in ("outbox", "received", "quarantine"):
        assert list(m.local_dir(folder).iterdir()) == []
    assert verify()
