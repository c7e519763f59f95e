"""The SFTP inbox with ``dag.test()`` against the real sshd: the wait ends skipped at the window's close,
and every file that is no request to take is answered (quarantined, reported, audited), never ignored."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa

from tests.dagutil import task_states
from tests.exchange.builders import encrypted_request
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, RetentionItem
from welfare_exchange.transport import sftp as transport

pytestmark = [pytest.mark.sftp]

DOWNSTREAM = ("fetch_request", "decrypt_and_validate", "match_entitlements", "build_result",
              "protocol_gate_before_delivery", "deliver_result", "record_retention", "record_data_subjects", "send_receipt")


def _records(action: str) -> list[AuditRecord]:
    with session_scope() as session:
        return list(session.scalars(sa.select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id)))


def _numbers(method1, n: int = 20) -> list[str]:
    return [number for number, _ in method1.world.children[:n]]


@pytest.fixture(params=["deferrable", "reschedule"])
def wait_mode(request, monkeypatch):
    """Both ways to wait: in the triggerer (Airflow's default_deferrable on) or by reschedule pokes."""
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", str(request.param == "deferrable"))
    monkeypatch.setenv("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", "4")
    return request.param


def test_an_empty_inbox_ends_the_run_skipped_and_the_audit_says_why(method1, wait_mode):
    assert method1.dag().get_task("wait_for_request").deferrable is (wait_mode == "deferrable")

    run = method1.run()

    states = task_states(run)
    assert states["wait_for_request"] == "skipped", states
    assert all(states[t] == "skipped" for t in DOWNSTREAM), states
    assert run.state == "success"  # Airflow's word for a run whose tasks all ended (skipped included)
    [fact] = _records("request.none_arrived")
    assert fact.outcome == "skipped" and fact.protocol_id == method1.protocol_id
    assert fact.message.startswith("no request arrived in the SFTP inbox between ") and fact.message.endswith(
        "UTC; nothing to do")
    assert not _records("task.failed") and method1.exchanges() == []
    with session_scope() as session:
        assert audit.verify(session).ok


def test_a_dotfile_is_quarantined_and_reported_while_the_request_beside_it_is_processed(method1, wait_mode):
    m = method1.municipality
    with m.sftp() as sftp, sftp.open("inbox/.aanvraag.xlsx", "wb") as fh:
        fh.write(b"hidden")
    m.upload_request(encrypted_request(_numbers(method1), method1.password), "aanvraag.xlsx")

    run = method1.run()

    assert run.state == "success", task_states(run)
    assert task_states(run)["deliver_result"] == "success"
    assert method1.remote("inbox") == [] and method1.remote("quarantine") == [".aanvraag.xlsx"]
    notices = {k: v for k, v in method1.outbox().items() if "inbox-melding" in k}
    [(name, text)] = notices.items()
    assert name.startswith("groeipakket_inbox-melding_") and ".aanvraag" not in name
    assert b"hidden_file" in text and b".aanvraag" not in text and b"6 bytes" in text
    [fact] = _records("inbox.quarantined")
    assert fact.outcome == "refused" and fact.message.startswith("hidden_file: ") and ".aanvraag" not in fact.message
    with session_scope() as session:
        kinds = {i.kind for i in session.scalars(sa.select(RetentionItem).where(RetentionItem.exchange_id.is_(None)))}
    assert kinds == {"quarantine", "report"}


def test_answering_is_done_once_whatever_the_re_runs(method1, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", "2")
    m = method1.municipality
    with m.sftp() as sftp, sftp.open("inbox/notes.pdf", "wb") as fh:
        fh.write(b"%PDF")

    for _ in range(2):
        assert task_states(method1.run())["wait_for_request"] == "skipped"
    assert method1.remote("quarantine") == ["notes.pdf"]
    assert len([k for k in method1.outbox() if "inbox-melding" in k]) == 1
    [fact] = _records("inbox.quarantined")
    assert fact.message.startswith("not_a_request: ")
    assert len(_records("request.none_arrived")) == 2


def test_a_file_over_the_size_limit_is_refused_from_its_listed_size_without_being_downloaded(method1, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("WELFARE_EXCHANGE_INTAKE_MAX_FILE_BYTES", "4096")
    big = encrypted_request(_numbers(method1, 200), method1.password)
    assert len(big) > 4096
    method1.municipality.upload_request(big, "groot.xlsx")
    # Unreadable to the agency's account on the server's disk: any attempt to download it fails the run.
    os.chmod(method1.municipality.local_dir("inbox") / "groot.xlsx", 0o200)

    run = method1.run()

    assert task_states(run)["wait_for_request"] == "skipped", task_states(run)
    assert method1.exchanges() == [] and method1.remote("quarantine") == ["groot.xlsx"]
    [text] = [v for k, v in method1.outbox().items() if "inbox-melding" in k]
    assert b"too_large" in text and b"not downloaded" in text
    [fact] = _records("request.quarantined")
    assert fact.outcome == "refused" and fact.message.startswith("too_large: ") and "not downloaded" in fact.message
    assert not _records("task.failed")


def test_fetch_refuses_an_oversized_file_from_its_stat(sftp_municipality, tmp_path):
    m = sftp_municipality
    m.upload_request(os.urandom(10_000), "groot.xlsx")
    with pytest.raises(transport.RemoteFileTooLarge, match="not downloaded"):
        transport.fetch(m.hook(), "inbox/groot.xlsx", tmp_path / "copy", max_bytes=9_999)
    assert not list(tmp_path.iterdir())


def test_a_temporary_upload_is_left_alone_while_fresh_and_reported_when_abandoned(method1, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("WELFARE_EXCHANGE_INBOX_STALE_UPLOAD_SECONDS", "3600")
    m = method1.municipality
    with m.sftp() as sftp:
        for name in ("bezig.xlsx.part", "oud.xlsx.filepart", "~$aanvraag.xlsx"):
            with sftp.open(f"inbox/{name}", "wb") as fh:
                fh.write(b"half")
        old = time.time() - 2 * 3600
        sftp.utime("inbox/oud.xlsx.filepart", (old, old))

    run = method1.run()

    assert task_states(run)["wait_for_request"] == "skipped"
    assert method1.remote("inbox") == ["bezig.xlsx.part", "~$aanvraag.xlsx"]
    assert method1.remote("quarantine") == ["oud.xlsx.filepart"]
    [text] = [v for k, v in method1.outbox().items() if "inbox-melding" in k]
    assert b"abandoned_upload" in text and b"rename" in text
    [fact] = _records("inbox.quarantined")
    assert fact.message.startswith("abandoned_upload: ")


def test_a_file_taken_half_written_gets_a_report_that_says_to_upload_under_a_temporary_name(method1):
    data = encrypted_request(_numbers(method1), method1.password)
    # As a client writing in place that stalled longer than the settle window: half a file, final name.
    with method1.municipality.sftp() as sftp, sftp.open("inbox/aanvraag.xlsx", "wb") as fh:
        fh.write(data[: len(data) // 2])

    run = method1.run()

    assert task_states(run)["decrypt_and_validate"] == "failed"
    [exchange] = method1.exchanges()
    assert exchange.failure_code == "corrupt"
    [report] = [v for k, v in method1.outbox().items() if k.endswith(".txt")]
    assert b"corrupt" in report and b".part" in report and b".filepart" in report and b"rename" in report
