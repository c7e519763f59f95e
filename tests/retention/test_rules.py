"""Each retention rule, clock-controlled (``as_of`` is the run's date), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.retention.helpers import (
    ACTOR, EXCHANGE_DATE, exchange, get_exchange, item, records, schedule, signed_protocol, staging_with_files, verify,
)
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol
from welfare_exchange.retention import runner
from welfare_exchange.retention.status import retention_status

DAY = dt.timedelta(days=1)


def _run(as_of: dt.date):
    runner.end_protocols(as_of, actor=ACTOR)
    runner.apply_rules(as_of, actor=ACTOR)
    return runner.delete_due(as_of, actor=ACTOR)


def test_days_after_delivery_deletes_on_the_deadline_not_a_day_before(project_db):
    pid = signed_protocol(result_retention_days=90)
    eid = exchange(pid)
    staging = staging_with_files(pid, eid, "result.xlsx")
    deadline = EXCHANGE_DATE + 90 * DAY
    item_id = schedule(pid, eid, "staging", "local", str(staging.folder), deadline, rule="result: 90 days", sha256="ab" * 32)

    assert _run(deadline - DAY).summary() == {"as_of": (deadline - DAY).isoformat(), "deleted": 0, "already_gone": 0,
                                            "missing": 0, "failed": 0, "interrupted_fetches_swept": 0}
    assert staging.folder.exists()

    report = _run(deadline)
    assert [c.outcome for c in report.certificates] == ["deleted"]
    assert not staging.folder.exists()
    assert item(item_id).deletion_outcome == "deleted"
    [cert] = records("retention.deleted")
    assert cert.outcome == "success" and cert.file_hashes == {"staging": "ab" * 32}
    assert "rule: result: 90 days" in cert.message and f"deadline {deadline.isoformat()}" in cert.message
    assert cert.exchange_id == eid and cert.protocol_id == pid
    assert verify()


def _staged_request(staging, data: bytes):
    staging.write_request(data)
    return staging.request_path()


def test_rerun_deletes_nothing_twice_and_a_copy_gone_is_reported_missing_never_certified(project_db):
    pid = signed_protocol()
    eid = exchange(pid)
    staging = staging_with_files(pid, eid)
    staging.write_request(f"{pid}a".encode())  # the exchange's request, sealed
    gone = staging.request_path()
    first = schedule(pid, eid, "request_file", "local", str(gone), EXCHANGE_DATE, sha256=get_exchange(eid).request_sha256)
    second = schedule(pid, eid, "staging", "local", str(staging.folder), EXCHANGE_DATE)
    gone.unlink()  # removed by hand before the run

    report = _run(EXCHANGE_DATE)
    assert [(c.item_id, c.outcome) for c in report.certificates] == [(second, "deleted")]
    assert report.missing == [first] and report.summary()["failed"] == 0
    assert "staging folder" in report.certificates[0].verified
    for day in (0, 0, 1):  # looked for again, nothing deleted or certified twice, one fact
        again = _run(EXCHANGE_DATE + day * DAY)
        assert again.certificates == [] and again.missing == [first]
    [missing] = records("retention.missing")
    assert missing.counts["item"] == first and "not certified" in missing.message
    # Closed as missing after a week; only then the ledger's payload follows, once.
    closed = _run(EXCHANGE_DATE + runner.MISSING_LOOK_DAYS * DAY)
    assert closed.missing == [first] and item(first).deletion_outcome == "missing"
    assert [c.kind for c in _run(EXCHANGE_DATE + runner.MISSING_LOOK_DAYS * DAY).certificates] == ["ledger_payload"]
    outcomes = sorted((r.counts["item"], r.outcome) for r in records("retention.deleted"))
    assert outcomes == [(second, "success"), (second + 1, "success")], "the missing copy is never certified"
    assert verify()


def test_a_staged_request_due_with_its_folder_is_certified_before_the_folder_goes(project_db):
    """A protocol's end makes everything due on one day: the request inside the staging folder is
    identified and certified first, not reported missing because the folder went before it."""
    pid = signed_protocol()
    eid = exchange(pid)
    staging = staging_with_files(pid, eid, "result.xlsx")
    folder = schedule(pid, eid, "staging", "local", str(staging.folder), EXCHANGE_DATE)
    request = schedule(pid, eid, "request_file", "local", str(_staged_request(staging, f"{pid}a".encode())), EXCHANGE_DATE,
                       sha256=get_exchange(eid).request_sha256)

    report = runner.delete_due(EXCHANGE_DATE, actor=ACTOR)

    assert [c.item_id for c in report.certificates] == [request, folder] and report.missing == []


def test_a_staged_file_whose_content_changed_is_not_deleted(project_db):
    pid = signed_protocol()
    eid = exchange(pid)
    staged = _staged_request(staging_with_files(pid, eid), b"another request")
    item_id = schedule(pid, eid, "request_file", "local", str(staged), EXCHANGE_DATE, sha256=get_exchange(eid).request_sha256)

    report = runner.delete_due(EXCHANGE_DATE, actor=ACTOR)

    assert report.certificates == [] and report.missing == [item_id] and staged.exists()


def test_delete_request_as_soon_as_matching_is_done(project_db):
    pid = signed_protocol(nis="99902", delete_request_after_match=True, request_retention_days=30)
    matched = exchange(pid, state="matched", tag="m")
    waiting = exchange(pid, state="validated", tag="v")
    late = EXCHANGE_DATE + 30 * DAY
    remote = schedule(pid, matched, "request_file", "sftp", "sftp_99902:received/aanvraag-m.xlsx", late)
    remote_waiting = schedule(pid, waiting, "request_file", "sftp", "sftp_99902:received/aanvraag-v.xlsx", late)
    staging = staging_with_files(pid, matched, "matched.fernet")
    staging.write_request(f"{pid}m".encode())

    runner.apply_rules(EXCHANGE_DATE, actor=ACTOR)

    assert item(remote).deadline == EXCHANGE_DATE and "as soon as matching is done" in item(remote).rule
    assert item(remote_waiting).deadline == late  # not matched yet: the request is still needed
    status = retention_status_of(pid, EXCHANGE_DATE)
    staged = [i for i in status["items"] if i["where"] == "local"]
    assert [(i["kind"], i["deadline"]) for i in staged] == [("request_file", EXCHANGE_DATE.isoformat())]
    # Only the local copy is deleted here (the SFTP side is covered by the SFTP tests).
    runner.delete_due(EXCHANGE_DATE, actor=ACTOR, raise_on_failure=False, hook_factory=_no_sftp)
    assert not staging.request_path().exists() and staging.path("matched.fernet").exists()
    [certificate] = records("retention.deleted")
    assert "sealed with the staging key; unsealed" in certificate.message and get_exchange(matched).request_sha256 in certificate.message


def _no_sftp(conn_id):
    from welfare_exchange.transport.sftp import SftpTransportError

    class Unreachable:
        ssh_conn_id = conn_id

        def get_managed_conn(self):
            raise SftpTransportError("unreachable in this test")

    return Unreachable()


def retention_status_of(protocol_id: int, as_of: dt.date) -> dict:
    with session_scope() as session:
        status = retention_status(session, as_of)
    [entry] = [p for p in status["protocols"] if p["protocol_id"] == protocol_id]
    return entry


def test_legal_maximum_clamps_deadlines_and_says_so(project_db, monkeypatch):
    pid = signed_protocol(result_retention_days=300)
    eid = exchange(pid)
    staging = staging_with_files(pid, eid, "result.xlsx")
    item_id = schedule(pid, eid, "staging", "local", str(staging.folder), EXCHANGE_DATE + 300 * DAY)
    monkeypatch.setenv("WELFARE_EXCHANGE_MAX_RETENTION_DAYS", "200")  # the legal maximum was lowered
    limit = EXCHANGE_DATE + 200 * DAY

    status = retention_status_of(pid, EXCHANGE_DATE)
    [shown] = status["items"]
    assert shown["clamped"] and shown["deadline"] == limit.isoformat()

    runner.apply_rules(EXCHANGE_DATE, actor=ACTOR)
    assert item(item_id).deadline == limit and "legal maximum: 200 days" in item(item_id).rule
    [clamp] = records("retention.clamped")
    assert "exceeds the legal maximum of 200 days" in clamp.message and clamp.exchange_id == eid
    runner.apply_rules(EXCHANGE_DATE + DAY, actor=ACTOR)
    assert len(records("retention.clamped")) == 1  # once

    assert _run(limit - DAY).certificates == [] and staging.folder.exists()
    assert [c.outcome for c in _run(limit).certificates] == ["deleted"] and not staging.folder.exists()


@pytest.mark.parametrize("ending", ["expired", "revoked"])
def test_protocol_end_stops_pending_exchanges_and_makes_its_data_due_now(project_db, ending):
    valid_until = dt.date(2026, 12, 31)
    pid = signed_protocol(valid_until=valid_until)
    other = signed_protocol(nis="99903")
    delivered = exchange(pid, state="delivered", tag="d")
    pending = exchange(pid, state="validated", tag="p")
    untouched = exchange(other, state="validated", tag="o")
    staging = staging_with_files(pid, pending, "valid.fernet")  # recorded by nobody yet
    delivered_staging = staging_with_files(pid, delivered, "result.xlsx")
    schedule(pid, delivered, "staging", "local", str(delivered_staging.folder), EXCHANGE_DATE + 90 * DAY)
    far = schedule(other, untouched, "staging", "local", str(staging_with_files(other, untouched).folder), EXCHANGE_DATE + 90 * DAY)

    if ending == "expired":
        as_of = valid_until + DAY
        assert runner.end_protocols(valid_until, actor=ACTOR)["protocols_expired"] == []  # still valid that day
    else:
        as_of = dt.date(2026, 11, 20)
        from welfare_exchange.protocols import transition

        with session_scope() as session:
            transition(session, pid, "revoke", actor=ACTOR, reason="test")

    result = runner.end_protocols(as_of, actor=ACTOR)
    assert result["protocols_expired"] == ([pid] if ending == "expired" else [])
    assert result["exchanges_stopped"] == 1 and result["items_due_at_protocol_end"] >= 1
    with session_scope() as session:
        assert session.get(Protocol, pid).status == ending
        assert session.get(Protocol, other).status == "signed"
    assert get_exchange(pending).state == "failed" and get_exchange(pending).failure_code == f"protocol_{ending}"
    assert get_exchange(delivered).state == "delivered" and get_exchange(untouched).state == "validated"
    if ending == "expired":
        assert records("protocol.expire")[-1].protocol_id == pid

    report = runner.delete_due(as_of, actor=ACTOR)
    assert not staging.folder.exists() and not delivered_staging.folder.exists()
    assert {c.exchange_id for c in report.certificates} == {pending, delivered}
    assert item(far).deleted_at is None

    audit_count = len(records("exchange.stopped")) + len(records("retention.protocol_ended"))
    again = runner.end_protocols(as_of, actor=ACTOR)
    assert again["exchanges_stopped"] == 0 and again["items_due_at_protocol_end"] == 0 and again["protocols_expired"] == []
    assert len(records("exchange.stopped")) + len(records("retention.protocol_ended")) == audit_count
    assert verify()


def test_ledger_payload_is_cleared_once_every_file_is_gone(project_db):
    pid = signed_protocol()
    eid = exchange(pid)
    staging = staging_with_files(pid, eid)
    schedule(pid, eid, "staging", "local", str(staging.folder), EXCHANGE_DATE)
    runner.delete_due(EXCHANGE_DATE, actor=ACTOR)  # the files first
    assert get_exchange(eid).request_name is not None
    report = _run(EXCHANGE_DATE + DAY)  # the next run: the ledger's names go too
    assert [(c.kind, c.where, c.outcome) for c in report.certificates] == [("ledger_payload", "db", "deleted")]
    assert get_exchange(eid).request_name is None
    assert _run(EXCHANGE_DATE + 2 * DAY).certificates == []


def test_local_deletion_outside_the_staging_area_is_refused_and_stays_due(project_db, tmp_path):
    pid = signed_protocol()
    outside = tmp_path / "not-staging"
    outside.mkdir()
    item_id = schedule(pid, None, "staging", "local", str(outside), EXCHANGE_DATE)
    with pytest.raises(runner.RetentionIncomplete, match="outside the staging area"):
        runner.delete_due(EXCHANGE_DATE, actor=ACTOR)
    assert outside.exists() and item(item_id).deleted_at is None


def test_leftovers_of_interrupted_fetches_are_swept_after_a_day(project_db):
    """A fetch that crashed between download and ledger leaves an encrypted copy in incoming/;
    the daily run deletes it once it is a day old, and says so — a fresh one may be in use."""
    import os
    import time

    from welfare_exchange.settings import get_settings

    incoming = get_settings().staging_dir / "protocol-7" / "incoming"
    incoming.mkdir(parents=True)
    old, fresh = incoming / "a1b2.request", incoming / "c3d4.request"
    old.write_bytes(b"still encrypted")
    fresh.write_bytes(b"being fetched")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))

    report = _run(EXCHANGE_DATE)
    assert report.summary()["interrupted_fetches_swept"] == 1
    assert not old.exists() and fresh.exists()
    [swept] = records("retention.swept")
    assert swept.protocol_id == 7 and swept.counts == {"files": 1}
    assert _run(EXCHANGE_DATE).swept == 0 and len(records("retention.swept")) == 1
    assert verify()
