"""A referral agreement over S/MIME e-mail, round trip with ``dag.test()`` on the real mail servers.

The list goes out by SMTP (aiosmtpd delivers it into the Sociaal Huis's dovecot mailbox) and the
test opens it as the Sociaal Huis's DPO would, with ``openssl smime -decrypt``. The feedback
comes back the way a Sociaal Huis using the OpenSSL command line sends it: the feedback workbook
(password-encrypted as agreed) attached, signed with its registered certificate
(``openssl smime -sign``) and encrypted to the agency's (``openssl smime -encrypt -aes256``).
It is opened and checked exactly like a Method 1 request by mail, taken once
(``INBOX`` → ``Processed``, a refused file on to ``Rejected``), and the refusal report goes back
by mail too. The log scanner (tests/fixtures/pii_scan.py) checks every test's output.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage

import pytest
import sqlalchemy as sa

from tests.dagutil import task_states
from tests.fixtures.mail import AGENCY_ADDRESS, GENT_ADDRESS
from tests.referral.builders import NAME, family, feedback_file, read_workbook, referral_protocol
from tests.referral.conftest import agreement_env, import_families, xcom_text
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Referral, ReferralFeedback, RetentionItem, SideEffect
from welfare_exchange.orchestration.referral_dag import feedback_dag_id, referral_dag_id, referral_dags
from welfare_exchange.protocols import registry
from welfare_exchange.settings import get_settings

TODAY = dt.datetime.now(dt.timezone.utc).date()
#: The throw-away certificates are valid from yesterday: the run dates are today.
LIST_RUN = dt.datetime(TODAY.year, TODAY.month, TODAY.day, 6, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def mail_agreement(sqlite_db, mail_env, smime_pki, monkeypatch, tmp_path):
    """A signed referral agreement with the Sociaal Huis of Gent over e-mail (sender and certificate pinned)."""
    password = agreement_env(monkeypatch, tmp_path)
    with session_scope() as session:
        protocol = referral_protocol(
            session, channel="smime", channel_connection="smtp_agency", fields=["parent_name", "criteria"],
            sender_address=GENT_ADDRESS, sender_certificates=[smime_pki.gent.certificate_pem],
        )
        entry = next(p for p in registry.snapshot(session) if p["id"] == protocol.id)
        registry.write_snapshot(session)
    return protocol.id, password, entry


def _dags(entry):
    with session_scope() as session:
        registry.write_snapshot(session)
    dags = referral_dags()
    return dags[referral_dag_id(entry)], dags[feedback_dag_id(entry)]


def _open(openssl, smime_pki, tmp_path, message: bytes) -> tuple[str, bytes]:
    """Decrypt a message to the Sociaal Huis as its DPO does: (attachment name, content)."""
    path = tmp_path / "in.eml"
    path.write_bytes(message)
    inner = openssl("smime", "-decrypt", "-in", str(path), "-recip", str(smime_pki.gent.certificate_path),
                    "-inkey", str(smime_pki.gent.key_path))
    entity = email.message_from_bytes(inner, policy=email.policy.default)
    [part] = [p for p in entity.walk() if p.get_filename()]
    return part.get_filename(), part.get_payload(decode=True)


def _feedback_mail(openssl, smime_pki, tmp_path, workbook: bytes, name: str, n: int) -> bytes:
    """What a Sociaal Huis using the OpenSSL command line sends: signed, then encrypted (AES-256)."""
    inner = EmailMessage()
    inner.set_content("Terugkoppeling in bijlage.\n")
    inner.add_attachment(workbook, maintype="application", subtype="octet-stream", filename=name)
    source = tmp_path / f"inner-{n}.eml"
    source.write_bytes(inner.as_bytes(policy=email.policy.SMTP))
    signed = tmp_path / f"signed-{n}.eml"
    signed.write_bytes(openssl("smime", "-sign", "-in", str(source), "-signer", str(smime_pki.gent.certificate_path),
                               "-inkey", str(smime_pki.gent.key_path)))
    body = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(signed), str(smime_pki.agency.certificate_path))
    head = f"From: {GENT_ADDRESS}\r\nTo: {AGENCY_ADDRESS}\r\nSubject: Terugkoppeling\r\nMessage-ID: <fb-{n}@gent.test>\r\n"
    return head.encode() + body


def _actions() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(sa.select(AuditRecord.action).order_by(AuditRecord.id)))


def test_referral_feedback_round_trip_by_smime_mail(mail_agreement, mail_env, smime_pki, openssl, tmp_path, caplog):
    protocol_id, password, entry = mail_agreement
    servers = mail_env
    families = [family(given=TODAY - dt.timedelta(days=3)) for _ in range(12)]
    import_families(families)
    list_dag, feedback_dag = _dags(entry)
    assert "smime" in feedback_dag.tags, "the feedback DAG exists for an e-mail agreement"

    # The list out, by mail, encrypted to the Sociaal Huis's certificate.
    run = list_dag.test(logical_date=LIST_RUN)
    assert run.state == "success", task_states(run)
    [sent] = servers.messages("gent")
    name, data = _open(openssl, smime_pki, tmp_path, sent)
    assert name.endswith(".xlsx")
    rows = next(iter(read_workbook(data, password).values()))
    assert len(rows) == 1 + 12
    with session_scope() as session:
        codes = sorted(r.code for r in session.scalars(sa.select(Referral)))
    assert len(codes) == 12

    # Feedback with an unknown referral id on line 3: refused by line number, the message set
    # aside in Rejected, the report back by mail; no evaluation.
    unknown = "DV-ZZZZ-ZZZZ"
    bad = feedback_file([(codes[0], "gecontacteerd", TODAY), (unknown, "geweigerd", TODAY)], password)
    servers.inject("agency", _feedback_mail(openssl, smime_pki, tmp_path, bad, "terugkoppeling_1.xlsx", 1))
    run = feedback_dag.test(logical_date=LIST_RUN + dt.timedelta(hours=3))
    assert run.state == "success", task_states(run)
    states = task_states(run)
    assert states["receive_feedback"] == "success" and states["report_evaluation"] == "skipped", states
    assert servers.messages("agency") == [] and len(servers.messages("agency", "Rejected")) == 1
    assert servers.messages("agency", "Processed") == []
    replies = servers.messages("gent")[1:]
    assert len(replies) == 1
    name, report = _open(openssl, smime_pki, tmp_path, replies[0])
    assert name.startswith("terugkoppeling_geweigerd_")
    text = report.decode()
    assert "unknown_referral" in text and "line(s) 3" in text and unknown not in text

    # The corrected feedback: decrypted, signature checked, recorded; the evaluation report written.
    outcomes = ["gecontacteerd"] * 6 + ["ondersteuning gestart"] * 4 + ["onbereikbaar"] * 2
    good = feedback_file(list(zip(codes, outcomes, [TODAY] * 12)), password)
    servers.inject("agency", _feedback_mail(openssl, smime_pki, tmp_path, good, "terugkoppeling_2.xlsx", 2))
    run = feedback_dag.test(logical_date=LIST_RUN + dt.timedelta(hours=4))
    assert run.state == "success", task_states(run)
    assert task_states(run)["report_evaluation"] == "success"
    assert servers.messages("agency") == [] and len(servers.messages("agency", "Processed")) == 1
    reports = sorted((get_settings().agency_outbox / "referral").iterdir())
    assert len(reports) == 1
    evaluation = reports[0].read_text()
    assert "gecontacteerd" in evaluation and "<10" in evaluation and "12" in evaluation
    assert NAME not in evaluation and not any(f.child in evaluation for f in families)

    # A second run with nothing new takes nothing twice: skipped wait, no new record, no new report.
    run = feedback_dag.test(logical_date=LIST_RUN + dt.timedelta(hours=5))
    states = task_states(run)
    assert states["wait_for_feedback"] == "skipped" and states["receive_feedback"] == "skipped", states
    # Re-running the step of the run that took the good message reads it again from Processed and
    # records nothing twice.
    from welfare_exchange.referral import steps
    from welfare_exchange.runinfo import RunInfo

    with session_scope() as session:
        [validated] = session.scalars(sa.select(Exchange.id).where(Exchange.state == "validated")).all()
    with session_scope() as session:
        taken_keys = list(session.scalars(
            sa.select(SideEffect.idempotency_key)
            .where(SideEffect.kind == "referral_feedback_received", SideEffect.state == "done").order_by(SideEffect.id)
        ))
    assert len(taken_keys) == 2
    _, _, dag_id, run_id = taken_keys[1].split(":", 3)
    again = steps.receive_feedback(protocol_id, {"uid": 999, "uidvalidity": 0, "size": 0},
                                   RunInfo(exchange_date=TODAY, dag_id=dag_id, run_id=run_id, task_id="rerun", try_number=2))
    assert again["exchange_id"] == validated, "the same file, read again from Processed: the same exchange"
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ReferralFeedback)) == 12
        states = sorted(e.state for e in session.scalars(sa.select(Exchange)))
        assert states.count("quarantined") == 1 and states.count("validated") == 1
        kept = {i.kind: i for i in session.scalars(sa.select(RetentionItem).where(RetentionItem.where == "imap"))}
        assert {"request_file", "quarantine"} <= set(kept), kept
        assert ":Processed:" in kept["request_file"].location and ":Rejected:" in kept["quarantine"].location
        assert audit.verify(session).ok
    assert len(servers.messages("gent")) == 2, "nothing more was mailed"
    assert len(list((get_settings().agency_outbox / "referral").iterdir())) == 1
    assert _actions().count("referral.evaluation_reported") == 1

    assert NAME not in caplog.text
    xcom = xcom_text(referral_dag_id(entry), feedback_dag_id(entry))
    assert NAME not in xcom and unknown not in xcom and not any(f.child in xcom for f in families)


def test_feedback_mail_not_signed_by_the_pinned_certificate_is_rejected_like_a_request(
    mail_agreement, mail_env, smime_pki, openssl, tmp_path,
):
    """Signed by another municipality's certificate: S/MIME refuses it before anything is read."""
    protocol_id, password, entry = mail_agreement
    servers = mail_env
    _, feedback_dag = _dags(entry)
    workbook = feedback_file([("DV-AAAA-BBBB", "gecontacteerd", TODAY)], password)
    inner = EmailMessage()
    inner.set_content("x\n")
    inner.add_attachment(workbook, maintype="application", subtype="octet-stream", filename="terugkoppeling.xlsx")
    source = tmp_path / "inner.eml"
    source.write_bytes(inner.as_bytes(policy=email.policy.SMTP))
    signed = tmp_path / "signed.eml"
    signed.write_bytes(openssl("smime", "-sign", "-in", str(source), "-signer", str(smime_pki.antwerpen.certificate_path),
                               "-inkey", str(smime_pki.antwerpen.key_path)))
    body = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(signed), str(smime_pki.agency.certificate_path))
    servers.inject("agency", f"From: {GENT_ADDRESS}\r\nTo: {AGENCY_ADDRESS}\r\nSubject: x\r\n".encode() + body)

    run = feedback_dag.test(logical_date=LIST_RUN + dt.timedelta(hours=3))
    assert task_states(run)["receive_feedback"] == "failed"
    assert servers.messages("agency") == [] and len(servers.messages("agency", "Rejected")) == 1
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ReferralFeedback)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Exchange)) == 0
    assert "request.rejected" in _actions()
