"""Method 1 over encrypted e-mail, end to end with ``dag.test()`` against real servers on loopback.

The municipality's request is made by a real S/MIME client — ``openssl smime -encrypt -aes256
-binary`` — around an Agile-encrypted request workbook, and put in the agency's mailbox
(dovecot); the result goes back over SMTP (aiosmtpd), which delivers it into the
municipality's mailbox, where the test opens it as the municipality's DPO would: with
``openssl smime -decrypt`` and the agreed file password.

The log scanner (tests/fixtures/pii_scan.py) checks every test's output, task logs included.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy

import sqlalchemy as sa

from tests.dagutil import task_states
from tests.exchange.builders import encrypted_request, expected_pairs
from tests.exchange.conftest import mail_logical_date
from tests.fixtures.mail import AGENCY_ADDRESS, ANTWERPEN_ADDRESS, GENT_ADDRESS
from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.exchange import steps
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.orchestration.dag_factory import MAIL_TRIAGE_DAG_ID, method1_dags


def _request(m, n: int = 120):
    numbers = [number for number, _ in m.world.children[:n]]
    stranger = insz.make(dt.date(2012, 4, 4), 901)  # valid, not in the store
    too_old = insz.make(dt.date(1990, 4, 4), 902)  # outside the 0–25 window
    return numbers, stranger, [stranger, too_old, "12345", numbers[1]]


def _mail_from_openssl(openssl, m, tmp_path, attachment: bytes, *options: str, sender: str = GENT_ADDRESS, n: int = 1) -> bytes:
    """What a municipality using the OpenSSL command line sends: the file S/MIME-encrypted to the
    agency's certificate, with the mail headers its mail program adds."""
    source = tmp_path / f"aanvraag-{n}.xlsx"
    source.write_bytes(attachment)
    body = openssl("smime", "-encrypt", *options, "-in", str(source), str(m.pki.agency.certificate_path))
    head = f"From: {sender}\r\nTo: {AGENCY_ADDRESS}\r\nSubject: Aanvraag Groeipakket\r\nMessage-ID: <req-{n}@gent.test>\r\n"
    return head.encode() + body


def _open_reply(openssl, m, tmp_path, message: bytes) -> tuple[str, bytes]:
    """Decrypt a reply as the municipality's DPO does; returns (attachment name, content)."""
    path = tmp_path / "reply.eml"
    path.write_bytes(message)
    inner = openssl(
        "smime", "-decrypt", "-in", str(path), "-recip", str(m.pki.gent.certificate_path), "-inkey", str(m.pki.gent.key_path)
    )
    entity = email.message_from_bytes(inner, policy=email.policy.default)
    [part] = [p for p in entity.walk() if p.get_filename()]
    return part.get_filename(), part.get_payload(decode=True)


def _audit_messages(action: str) -> list[str]:
    with session_scope() as session:
        return [r.message for r in session.scalars(sa.select(AuditRecord).where(AuditRecord.action == action))]


def test_openssl_request_by_mail_gets_exactly_one_encrypted_result(method1_mail, openssl, tmp_path):
    m = method1_mail
    numbers, stranger, extras = _request(m)
    m.servers.inject("agency", _mail_from_openssl(openssl, m, tmp_path, encrypted_request(numbers, m.password, extra_rows=extras), "-aes256", "-binary"))
    logical = mail_logical_date()

    run = m.run(logical)

    assert run.state == "success", task_states(run)
    replies = {_open_reply(openssl, m, tmp_path, r)[0]: r for r in m.mailbox("gent")}
    assert len(replies) == 2, "exactly two messages go back: the receipt and the result"
    [receipt_name] = [n for n in replies if n.endswith(".txt")]
    [name] = [n for n in replies if n.endswith(".xlsx")]
    reply = email.message_from_bytes(replies[name], policy=email.policy.default)
    assert reply.get_content_type() == "application/pkcs7-mime" and reply["To"] == GENT_ADDRESS
    asn1 = openssl("cms", "-cmsout", "-print", "-in", str(_write(tmp_path, "r.eml", replies[name])))
    assert b"aes-256-cbc" in asn1.lower()
    _, data = _open_reply(openssl, m, tmp_path, replies[name])
    sheets = m.open_result(data)
    got = [(r[0], r[1], r[2], r[3] or None) for r in sheets["Resultaat"][1:]]
    expected = expected_pairs(m.world, set(numbers) | {stranger}, logical.date())
    assert len(expected) > 10
    assert got == expected, "result rows differ from the independent computation"

    [exchange] = m.exchanges()
    assert exchange.state == "delivered"
    # The receipt: the exchange, the SHA-256 of the file as received, the rows to be processed; no number.
    _, receipt = _open_reply(openssl, m, tmp_path, replies[receipt_name])
    assert f"exchange: {exchange.id}".encode() in receipt and exchange.request_sha256.encode() in receipt
    assert f"rows to be processed: {exchange.counts['valid']}".encode() in receipt
    assert not any(n.encode() in receipt for n in numbers)
    assert m.mailbox("agency") == [] and len(m.mailbox("agency", "Processed")) == 1
    [delivered] = m.side_effects("delivered")
    assert delivered.target == reply["Message-ID"], "the ledger holds the Message-ID that was sent"
    actions = [a for a, _ in m.actions()]
    for step in ("request.fetched", "request.validated", "request.acknowledged", "entitlements.matched", "result.built",
                 "request.subjects", "result.subjects", "result.delivered", "retention.scheduled"):
        assert actions.count(step) == 1, step
    # The registered certificate that ends within 30 days: a warning, in the audit and the log.
    assert ("certificate.expiring", "warning") in m.actions()
    assert any("expires on" in text for text in _audit_messages("certificate.expiring"))
    with session_scope() as session:
        assert audit.verify(session).ok

    # Re-running every step of the finished exchange sends nothing more and repeats no fact.
    sent_before, facts_before = len(m.servers.delivered), len(m.actions())
    info = RunInfo(exchange_date=logical.date(), dag_id=run.dag_id, run_id=run.run_id, task_id="rerun", try_number=2)
    item = {"uid": 1, "uidvalidity": 0, "size": 0}
    assert steps.fetch_request(m.protocol_id, item, info) == exchange.id
    steps.decrypt_and_validate(exchange.id, info)
    assert steps.send_receipt(exchange.id, info)["already_sent"] is True
    steps.match_entitlements(exchange.id, info)
    assert steps.build_result(exchange.id, info)["result_sha256"] == exchange.result_sha256
    steps.recheck_gate(exchange.id, info)
    again = steps.deliver_result(exchange.id, info)
    assert again["already_delivered"] is True and again["message_id"] == reply["Message-ID"]
    steps.record_retention(exchange.id, info)
    assert len(m.servers.delivered) == sent_before and len(m.mailbox("gent")) == 2
    assert len(m.side_effects("delivered")) == 1
    assert len(m.actions()) == facts_before
    with session_scope() as session:
        assert audit.verify(session).ok


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_3des_request_is_refused_rejected_audited_and_answered(method1_mail, openssl, tmp_path):
    m = method1_mail
    numbers, _, _ = _request(m, n=20)
    # No cipher option: OpenSSL's default, 3DES, which the agency cannot decrypt.
    m.servers.inject("agency", _mail_from_openssl(openssl, m, tmp_path, encrypted_request(numbers, m.password), "-binary"))

    run = m.run(mail_logical_date())

    states = task_states(run)
    assert run.state == "failed"
    assert states["fetch_request"] == "failed" and states["deliver_result"] != "success"
    assert m.exchanges() == [], "a refused message never becomes an exchange"
    assert m.mailbox("agency") == [] and len(m.mailbox("agency", "Rejected")) == 1
    assert ("request.rejected", "refused") in m.actions()
    [reason] = _audit_messages("request.rejected")
    assert reason.startswith("unsupported_cipher") and "aes256" in reason.replace("-", "").lower()
    failed = " ".join(_audit_messages("task.failed"))
    assert "unsupported_cipher" in failed and "Rejected" in failed, "the task failure says what and where"
    # The municipality is told why, without any personal data, and no result leaves.
    [report] = m.mailbox("gent")
    name, text = _open_reply(openssl, m, tmp_path, report)
    assert name.endswith(".txt") and b"unsupported_cipher" in text and b"-aes256" in text
    assert not insz.find_insz_shaped(text.decode())
    assert m.side_effects("delivered") == []


def test_unknown_sender_is_never_taken_and_is_rejected_by_the_triage(method1_mail, openssl, tmp_path, monkeypatch):
    m = method1_mail
    numbers, _, _ = _request(m, n=20)
    m.servers.inject(
        "agency",
        _mail_from_openssl(openssl, m, tmp_path, encrypted_request(numbers, m.password), "-aes256", "-binary", sender=ANTWERPEN_ADDRESS),
    )
    monkeypatch.setenv("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", "3")

    run = m.run(mail_logical_date())
    assert task_states(run)["wait_for_request"] == "skipped", "Gent's exchange does not take Antwerpen's mail"
    assert len(m.mailbox("agency")) == 1

    triage = method1_dags()[MAIL_TRIAGE_DAG_ID].test(logical_date=mail_logical_date())

    assert triage.state == "success", task_states(triage)
    assert m.mailbox("agency") == [] and len(m.mailbox("agency", "Rejected")) == 1
    [reason] = _audit_messages("request.rejected")
    assert reason.startswith("unknown_sender") and "@antwerpen.test" in reason and "dpo@" not in reason
    assert m.mailbox("gent") == [] and m.servers.delivered == [], "a stranger gets no answer"
    assert m.exchanges() == []


def test_unsigned_request_is_refused_when_the_protocol_requires_a_signature(method1_mail, openssl, tmp_path):
    m = method1_mail
    with session_scope() as session:
        from welfare_exchange.protocols import get

        get(session, m.protocol_id).require_signature = True
    numbers, _, _ = _request(m, n=20)
    m.servers.inject("agency", _mail_from_openssl(openssl, m, tmp_path, encrypted_request(numbers, m.password), "-aes256", "-binary"))

    run = m.run(mail_logical_date())

    assert run.state == "failed" and task_states(run)["fetch_request"] == "failed"
    [reason] = _audit_messages("request.rejected")
    assert reason.startswith("bad_signature")
    assert len(m.mailbox("agency", "Rejected")) == 1


def test_wrong_file_password_quarantines_the_message_with_a_report(method1_mail, openssl, tmp_path):
    m = method1_mail
    numbers, _, _ = _request(m, n=20)
    m.servers.inject("agency", _mail_from_openssl(openssl, m, tmp_path, encrypted_request(numbers, m.password + "x"), "-aes256", "-binary"))

    run = m.run(mail_logical_date())

    states = task_states(run)
    assert run.state == "failed" and states["decrypt_and_validate"] == "failed"
    [exchange] = m.exchanges()
    assert exchange.state == "quarantined" and exchange.failure_code == "wrong_password"
    assert m.mailbox("agency", "Processed") == [] and len(m.mailbox("agency", "Rejected")) == 1
    [report] = m.mailbox("gent")
    name, text = _open_reply(openssl, m, tmp_path, report)
    assert name.endswith(".txt") and b"wrong_password" in text
    assert ("request.quarantined", "refused") in m.actions()


def test_protocol_create_registers_certificates_and_the_signature_requirement(sqlite_db, smime_pki, capsys):
    from cryptography.hazmat.primitives import serialization

    from welfare_exchange.cli import main
    from welfare_exchange.protocols import get

    der = smime_pki.directory / "gent.der"
    der.write_bytes(smime_pki.gent.certificate.public_bytes(serialization.Encoding.DER))
    base = ["protocol", "create", "--nis", "44021", "--municipality", "Gent", "--kind", "method1", "--channel", "smime",
            "--key-connection", "key_44021", "--channel-connection", "smtp_agency"]
    assert main([*base, "--sender-address", "DPO@Gent.test"]) == 2  # no certificate: refused, clearly
    assert "--sender-certificate" in capsys.readouterr().err
    assert main([*base, "--sender-address", "DPO@Gent.test", "--sender-certificate", str(smime_pki.gent.certificate_path),
                 "--sender-certificate", str(der), "--require-signature"]) == 0
    protocol_id = int(capsys.readouterr().out.split()[-1])
    with session_scope() as session:
        protocol = get(session, protocol_id)
        assert protocol.sender_address == GENT_ADDRESS and protocol.require_signature
        assert protocol.sender_certificates == [smime_pki.gent.certificate_pem] * 2


def test_deferrable_trigger_finds_the_senders_message_and_serialises(method1_mail, openssl, tmp_path):
    import asyncio

    from welfare_exchange.orchestration.triggers.mail_arrival import MailArrivalTrigger

    m = method1_mail
    trigger = MailArrivalTrigger(GENT_ADDRESS, "imap_agency", 0.2)
    path, kwargs = trigger.serialize()
    assert path == "welfare_exchange.orchestration.triggers.mail_arrival.MailArrivalTrigger"
    numbers, _, _ = _request(m, n=5)
    m.servers.inject("agency", _mail_from_openssl(openssl, m, tmp_path, encrypted_request(numbers, m.password), "-aes256", "-binary"))

    async def first_event():
        return await asyncio.wait_for(MailArrivalTrigger(**kwargs).run().__anext__(), timeout=30)

    event = asyncio.run(first_event())
    assert event.payload["status"] == "found"
    assert set(event.payload["message"]) == {"uid", "uidvalidity", "size"}, "where it is; nothing the sender wrote"
    assert len(m.mailbox("agency")) == 1, "looking changes nothing"


def test_an_empty_mailbox_ends_the_run_skipped_and_the_audit_says_why(method1_mail, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS", "3")

    run = method1_mail.run(mail_logical_date())

    states = task_states(run)
    assert states["wait_for_request"] == "skipped" and states["fetch_request"] == "skipped", states
    [message] = _audit_messages("request.none_arrived")
    assert message.startswith("no request arrived in the agency's mailbox (from the protocol's sender) between ")
    assert message.endswith("UTC; nothing to do")
