"""Method 2 end to end with ``dag.test()``: a real SMTP server (aiosmtpd) and the real OpenSSH
SFTP server on loopback. The log scanner checks every test's output for INSZ numbers."""

from __future__ import annotations

import collections
import io

import pytest
from pypdf import PdfReader

from tests.dagutil import task_states
from tests.outreach.builders import OFFER
from tests.outreach.conftest import EXCHANGE_DATE, SENDER
from welfare_exchange import audit, cli
from welfare_exchange.db import session_scope
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.outreach import steps
from welfare_exchange.outreach.report import report_name
from welfare_exchange.staging import Staging

pytestmark = [pytest.mark.sftp]


def _per_recipient(method2) -> collections.Counter:
    return collections.Counter(method2.smtp.recipients())


def _mismatch(got: set, expected: set) -> tuple[int, int]:
    """(missing, unexpected) — counts only, so a failure shows no address."""
    return len(expected - got), len(got - expected)


def _letters_text(protocol_id: int, exchange_id: int) -> list[str]:
    staging = Staging(protocol_id, exchange_id)
    names = sorted(p.name[: -len(".fernet")] for p in staging.folder.glob("letters-*.pdf.fernet"))
    texts = []
    for name in names:
        reader = PdfReader(io.BytesIO(staging.read_encrypted(name)))
        texts.append("\n".join(page.extract_text() for page in reader.pages))
    return texts


def test_campaign_reaches_each_family_once_and_reports_counts_only(method2):
    store = method2.store
    run = method2.run()
    assert run.state == "success", task_states(run)

    # E-mail: exactly one message per family with a (deliverable) address, none to anyone else.
    emailed = {store.email_of(b) for b in store.expected_by("email")}
    bounced = {e for e in emailed if e.endswith("@bounce.invalid")}
    per_recipient = _per_recipient(method2)
    # Compared as counts: a failing assertion must not print the addresses.
    assert _mismatch(set(per_recipient), emailed - bounced) == (0, 0)
    assert set(per_recipient.values()) == {1}
    messages = method2.smtp.parsed()
    assert len({m["Message-ID"] for m in messages}) == len(messages)
    body = messages[0].get_body(("plain",)).get_content()
    assert messages[0]["From"].addresses[0].addr_spec == SENDER
    for text in (OFFER["title"], OFFER["link"], OFFER["contact"]["organisation"], "Beste ouder"):
        assert text in body

    # Letters: every letter family once, in PDFs that carry the offer and the address.
    [exchange] = method2.exchanges()
    texts = _letters_text(method2.protocol_id, exchange.id)
    letter_families = store.expected_by("letter")
    assert len(texts) == -(-len(letter_families) // 4)  # batches of 4
    joined = "\n".join(texts)
    wrong = [b for b in letter_families if joined.count(f"{store.beneficiaries[b][2]}\n") != 1]
    assert len(wrong) == 0, f"{len(wrong)} letter families not exactly once in the PDFs"  # the street line
    for text in (OFFER["title"], "Hoe vraagt u het aan?", OFFER["link"], OFFER["contact"]["phone"], "€ 1,50"):
        assert text in joined.replace("\n", " ") or text in joined

    # The outbox: one settled row per reachable family.
    rows = method2.outbox_rows()
    assert len(rows) == len(store.expected) - len(store.expected_by("unreachable"))
    assert all(r.state == "done" for r in rows)
    outcomes = collections.Counter(r.detail["outcome"] for r in rows)
    assert outcomes == {"email": len(emailed - bounced), "letter": len(letter_families), "bounced": len(bounced)}

    # The report: in the municipality's outbox, counts only, small counts suppressed.
    outbox = method2.municipality.read_outbox()
    name = report_name(store.nis, method2.protocol_id, exchange.id)
    assert list(outbox) == [name]
    report = outbox[name].decode()
    assert "Bereikt per e-mail" in report and "<10" in report
    assert len(emailed - bounced) >= 10 and f"{len(emailed - bounced)}" in report
    assert sum(secret in report for secret in store.personal_strings()) == 0
    assert exchange.state == "delivered"

    # The audit: every message, never an INSZ, e-mail or address; the chain verifies.
    records = method2.audit_records()
    actions = collections.Counter(r.action for r in records)
    assert actions["message.sent"] == len(emailed - bounced)
    assert actions["message.bounced"] == len(bounced)
    assert sum(r.counts["letters"] for r in records if r.action == "letters.released") == len(letter_families)
    assert actions["report.delivered"] == 1
    for record in records:
        text = " ".join(str(v) for v in (record.message, record.counts, record.file_hashes) if v)
        assert sum(secret in text for secret in store.personal_strings()) == 0, f"audit record {record.id}"
    with session_scope() as session:
        assert audit.verify(session).ok


def test_mail_room_exports_the_letters_and_status_shows_counts(method2, tmp_path, capsys):
    assert method2.run().state == "success"
    [exchange] = method2.exchanges()
    assert cli.main(["outreach", "letters", str(exchange.id), "--out", str(tmp_path / "mailroom")]) == 0
    files = sorted((tmp_path / "mailroom").iterdir())
    assert len(files) == len(_letters_text(method2.protocol_id, exchange.id))
    assert all(f.stat().st_mode & 0o077 == 0 for f in files)
    assert PdfReader(files[0]).pages[0].extract_text()
    assert cli.main(["outreach", "status", str(exchange.id)]) == 0
    out = capsys.readouterr().out
    assert '"email": ' in out and sum(secret in out for secret in method2.store.personal_strings()) == 0
    assert "letters.exported" in {r.action for r in method2.audit_records()}


def test_every_step_rerun_and_a_second_run_send_nothing_again(method2):
    run = method2.run()
    assert run.state == "success", task_states(run)
    before = method2.smtp.count()
    [exchange] = method2.exchanges()
    audit_before = len(method2.audit_records())
    outbox_before = method2.municipality.read_outbox()

    info = RunInfo(exchange_date=EXCHANGE_DATE, dag_id=run.dag_id, run_id=run.run_id, task_id="rerun", try_number=2)
    assert steps.open_campaign(method2.protocol_id, info) == exchange.id
    steps.select_families(exchange.id, info)
    steps.render_letters(exchange.id, info)
    steps.recheck_gate(exchange.id, info)
    steps.send_messages(exchange.id, info)
    assert steps.report_to_municipality(exchange.id, info)["already_delivered"] is True
    steps.record_retention(exchange.id, info)

    assert method2.smtp.count() == before
    assert len(method2.audit_records()) == audit_before
    assert method2.municipality.read_outbox() == outbox_before

    # A new run of the same campaign (another day, another run id) continues it: nothing new.
    import datetime as dt

    again = method2.run(dt.datetime(2026, 11, 3, 9, tzinfo=dt.timezone.utc))
    assert again.state == "success", task_states(again)
    assert method2.smtp.count() == before
    assert len(method2.exchanges()) == 1
    assert "campaign.resumed" in {r.action for r in method2.audit_records()}
    with session_scope() as session:
        assert audit.verify(session).ok


def test_revoked_protocol_sends_nothing(method2):
    method2.revoke()
    run = method2.run()
    assert run.state == "failed"
    assert task_states(run)["protocol_gate"] == "failed"
    assert method2.smtp.count() == 0 and method2.exchanges() == []
