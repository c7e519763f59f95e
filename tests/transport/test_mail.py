"""Mail transport against real servers on loopback: aiosmtpd (SMTP) and dovecot (IMAP).

The round trip is the channel's whole path: a municipality's encrypted request goes out over
SMTP, lands in the agency's mailbox, is fetched over IMAP, decrypted and marked processed;
the agency's encrypted result goes back over SMTP to the municipality's mailbox.
"""

from __future__ import annotations

import datetime as dt
import email
import hashlib

import pytest

from welfare_exchange.devtools.mail_server import IMAP_CONN_ID, LOOPBACK, SMTP_CONN_ID
from welfare_exchange.transport import mail, smime
from tests.fixtures.mail import AGENCY_ADDRESS, GENT_ADDRESS

PAYLOAD = b"PK\x03\x04" + bytes(range(256)) * 4


def _request(pki, key: str, payload: bytes = PAYLOAD) -> bytes:
    """An encrypted request from Gent to the agency, as a municipality's client would send it."""
    return smime.encrypt(
        payload,
        pki.agency.certificate,
        filename="aanvraag.xlsx",
        subject="Aanvraag Groeipakket",
        sender=GENT_ADDRESS,
        to=AGENCY_ADDRESS,
        message_id=mail.make_message_id(key, "gent.test"),
    )


def _endpoint(servers, user: str) -> mail.ImapEndpoint:
    return mail.ImapEndpoint(LOOPBACK, servers.imap_port, user, servers.users[user], use_ssl=False)


def test_request_round_trip_smtp_imap_decrypt_and_mark_processed(mail_env, smime_pki):
    request = _request(smime_pki, "44021/2026-03-01/request")
    mail.send(SMTP_CONN_ID, request, sender=GENT_ADDRESS, to=AGENCY_ADDRESS)

    waiting = mail.fetch_unseen(IMAP_CONN_ID)
    assert [(m.sender, m.too_large) for m in waiting] == [(GENT_ADDRESS, False)]
    agency_cert, agency_key = mail.load_agency_identity()
    opened = smime.decrypt(
        waiting[0].data,
        agency_cert,
        agency_key,
        expected_senders=GENT_ADDRESS,
        sender_certificates=[smime_pki.gent.certificate],
    )
    assert opened.attachments == [("aanvraag.xlsx", PAYLOAD)]
    assert opened.message_id == waiting[0].message_id

    [message] = waiting
    digest = hashlib.sha256(message.data).hexdigest()
    moved = mail.move_message(IMAP_CONN_ID, mailbox="INBOX", to=mail.PROCESSED_MAILBOX, sha256=digest,
                              uidvalidity=message.uidvalidity, uid=message.uid)
    assert moved.mailbox == mail.PROCESSED_MAILBOX and moved.sha256 == digest and moved.size == message.size
    assert mail.fetch_unseen(IMAP_CONN_ID) == []
    again = mail.move_message(IMAP_CONN_ID, mailbox="INBOX", to=mail.PROCESSED_MAILBOX, sha256=digest,
                              uidvalidity=message.uidvalidity, uid=message.uid)
    assert again == moved  # a re-run moves nothing twice: it finds the message where it went
    assert mail_env.messages("agency", mail.PROCESSED_MAILBOX) == [message.data]


def test_fetching_changes_nothing_and_lists_oldest_first(mail_env, smime_pki):
    for n in range(3):
        mail_env.inject("agency", _request(smime_pki, f"44021/2026-03-0{n + 1}/request"))
    first = mail.fetch_unseen(IMAP_CONN_ID)
    second = mail.fetch_unseen(IMAP_CONN_ID)
    assert [m.uid for m in first] == [m.uid for m in second] == sorted(m.uid for m in first)
    assert len(first) == 3
    assert [m.message_id for m in mail.fetch_unseen(IMAP_CONN_ID, limit=2)] == [m.message_id for m in first[:2]]
    with mail_env.imap("agency") as client:
        client.select("INBOX", readonly=True)
        _, unseen = client.search(None, "UNSEEN")
    assert len(unseen[0].split()) == 3  # nobody's mail client loses the "new" mark


def test_a_message_read_by_a_person_is_still_fetched(mail_env, smime_pki):
    mail_env.inject("agency", _request(smime_pki, "44021/2026-03-01/request"))
    with mail_env.imap("agency") as client:
        client.select("INBOX")
        client.store("1:*", "+FLAGS", r"(\Seen)")
    assert len(mail.fetch_unseen(IMAP_CONN_ID)) == 1


def test_oversized_message_is_listed_but_not_downloaded(mail_env, smime_pki):
    request = _request(smime_pki, "44021/2026-03-01/request")
    mail_env.inject("agency", request)
    (big,) = mail.fetch_unseen(IMAP_CONN_ID, max_bytes=len(request) // 2)
    assert big.too_large and big.data is None and big.size >= len(request) - 16
    error = mail.oversized_error(big, max_bytes=len(request) // 2)
    assert error.code == "too_large"
    # Moved by its UID alone (never downloaded); its digest is taken on the server, in pieces.
    moved = mail.move_message(IMAP_CONN_ID, mailbox="INBOX", to=mail.REJECTED_MAILBOX, sha256=None,
                              uidvalidity=big.uidvalidity, uid=big.uid)
    [stored] = mail_env.messages("agency", mail.REJECTED_MAILBOX)
    assert moved.sha256 == hashlib.sha256(stored).hexdigest() and moved.size == big.size


def _openssl_style(n: int) -> bytes:
    """A request as the OpenSSL command line writes it: From, To, Subject, no Message-ID."""
    return (f"To: {AGENCY_ADDRESS}\r\nFrom: {GENT_ADDRESS}\r\nSubject: Aanvraag\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nciphertext {n}\r\n").encode()


def test_messages_without_message_id_are_moved_by_their_digest_never_by_a_uid_alone(mail_env):
    for n in range(3):
        mail_env.inject("agency", _openssl_style(n))
    mail_env.inject("agency", b"From: x@y.test\r\n\r\nolder\r\n", mailbox=mail.PROCESSED_MAILBOX)
    waiting = mail.fetch_unseen(IMAP_CONN_ID)
    assert [m.message_id for m in waiting] == [None, None, None]
    first, second = waiting[0], waiting[1]

    # The second message's digest with the first one's UID as a (wrong) hint: the digest decides,
    # and the UID the server's COPYUID answer gives holds that message.
    moved = mail.move_message(IMAP_CONN_ID, mailbox="INBOX", to=mail.PROCESSED_MAILBOX,
                              sha256=hashlib.sha256(second.data).hexdigest(), size=second.size,
                              uidvalidity=first.uidvalidity, uid=first.uid)

    assert [m.data for m in mail.fetch_unseen(IMAP_CONN_ID)] == [waiting[0].data, waiting[2].data]
    with mail_env.imap("agency") as client:
        client.select(f'"{mail.PROCESSED_MAILBOX}"', readonly=True)
        _, parts = client.uid("FETCH", str(moved.uid), "(BODY.PEEK[])")
    assert next(p[1] for p in parts if isinstance(p, tuple)) == second.data
    with pytest.raises(mail.MessageMissing):
        mail.move_message(IMAP_CONN_ID, mailbox="INBOX", to=mail.REJECTED_MAILBOX, sha256="0" * 64)


def test_since_filters_by_arrival_day(mail_env, smime_pki):
    mail_env.inject("agency", _request(smime_pki, "44021/2026-03-01/request"))
    assert len(mail.fetch_unseen(IMAP_CONN_ID, since=dt.date.today() - dt.timedelta(days=1))) == 1
    assert mail.fetch_unseen(IMAP_CONN_ID, since=dt.date.today() + dt.timedelta(days=2)) == []


def test_explicit_endpoint_works_without_an_airflow_connection(mail_env, smime_pki):
    mail_env.inject("agency", _request(smime_pki, "44021/2026-03-01/request"))
    endpoint = _endpoint(mail_env, "agency")
    (message,) = mail.fetch_unseen(None, endpoint=endpoint)
    moved = mail.move_message(None, mailbox="INBOX", to=mail.PROCESSED_MAILBOX,
                              sha256=hashlib.sha256(message.data).hexdigest(), endpoint=endpoint)
    assert moved.uid and mail.fetch_unseen(None, endpoint=endpoint) == []


def test_wrong_imap_password_gives_an_actionable_error(mail_env):
    endpoint = mail.ImapEndpoint(LOOPBACK, mail_env.imap_port, "agency", "wrong", use_ssl=False)
    with pytest.raises(mail.MailTransportError, match="cannot log in"):
        mail.fetch_unseen(None, endpoint=endpoint)


def test_result_goes_back_encrypted_to_the_municipality(mail_env, smime_pki):
    message_id = mail.make_message_id("44021/2026-03-01/result", "agency.test")
    result = smime.encrypt(
        PAYLOAD,
        smime_pki.gent.certificate,
        filename="resultaat.xlsx",
        subject="Resultaat Groeipakket",
        sender=AGENCY_ADDRESS,
        to=GENT_ADDRESS,
        message_id=message_id,
    )
    assert mail.send(SMTP_CONN_ID, result, sender=AGENCY_ADDRESS, to=GENT_ADDRESS) == message_id
    assert [d.rcpt_tos for d in mail_env.delivered] == [(GENT_ADDRESS,)]

    (received,) = mail.fetch_unseen(None, endpoint=_endpoint(mail_env, "gent"))
    assert received.message_id == message_id
    opened = smime.decrypt(
        received.data, smime_pki.gent.certificate, smime_pki.gent.private_key, expected_senders=AGENCY_ADDRESS
    )
    assert opened.attachments == [("resultaat.xlsx", PAYLOAD)]


def test_send_refuses_a_message_without_message_id(mail_env):
    with pytest.raises(mail.MailTransportError, match="no Message-ID"):
        mail.send(SMTP_CONN_ID, b"From: a@agency.test\r\nSubject: x\r\n\r\nbody\r\n", sender=AGENCY_ADDRESS, to=GENT_ADDRESS)
    assert mail_env.delivered == []


def test_message_id_is_deterministic_and_reveals_nothing():
    first = mail.make_message_id("44021/2026-03-01/result", "agency.test")
    assert first == mail.make_message_id("44021/2026-03-01/result", "Agency.Test")
    assert first != mail.make_message_id("44021/2026-03-01/result/v2", "agency.test")
    assert first.startswith("<we.") and first.endswith("@agency.test>")
    assert "44021" not in first
    assert email.utils.parseaddr(first.strip("<>"))[1] == first.strip("<>")
    with pytest.raises(ValueError):
        mail.make_message_id("k", "bad domain>")


def test_missing_dovecot_is_an_error_not_a_skip(tmp_path, monkeypatch):
    from welfare_exchange.devtools import mail_server

    monkeypatch.setattr(mail_server, "DOVECOT", str(tmp_path / "no-dovecot"))
    with pytest.raises(RuntimeError, match="dovecot-imapd"):
        mail_server.MailServers.start(tmp_path / "mail")
