"""Request messages are deleted from the agency's mailbox only once identified (real dovecot).

Municipalities using the OpenSSL command line send requests without a Message-ID, and a
message's UID changes when it is moved from INBOX to ``Processed`` or ``Rejected``. Several such
requests — two municipalities, the same sender twice, taken, quarantined and refused — go through
the real channel code into the same folders; each retention item must then delete exactly its
own message (its SHA-256 checked), certify what matched, and leave every other message alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.exchange.builders import encrypted_request
from tests.exchange.conftest import _signed_protocol, mail_logical_date
from tests.fixtures.mail import AGENCY_ADDRESS, ANTWERPEN_ADDRESS, GENT_ADDRESS
from tests.retention.helpers import ACTOR, records, verify
from welfare_exchange import insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import RetentionItem
from welfare_exchange.exchange import steps
from welfare_exchange.channels import smime as channel
from welfare_exchange.channels.common import ExchangeRefused
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.retention import runner


@dataclass
class Mailroom:
    """Two e-mail protocols (Gent, Antwerpen) and what their requests left in the agency's mailbox."""

    servers: object
    protocols: dict[str, int]
    passwords: dict[str, str]
    day: dt.date


@pytest.fixture
def mailroom(sqlite_db, mail_env, smime_pki, monkeypatch) -> Mailroom:
    protocols, passwords = {}, {}
    for town, nis, address, cert in (("gent", "44021", GENT_ADDRESS, smime_pki.gent),
                                     ("antwerpen", "11002", ANTWERPEN_ADDRESS, smime_pki.antwerpen)):
        protocols[town], passwords[town] = _signed_protocol(
            monkeypatch, nis, municipality=town.title(), channel="smime", channel_connection="smtp_agency",
            sender_address=address, sender_certificates=[cert.certificate_pem],
        )
    return Mailroom(servers=mail_env, protocols=protocols, passwords=passwords, day=mail_logical_date().date())


def _openssl_mail(openssl, smime_pki, tmp_path, attachment: bytes, sender: str, *options: str) -> bytes:
    """What the OpenSSL command line sends: From/To/Subject, no Message-ID."""
    source = tmp_path / "aanvraag.xlsx"
    source.write_bytes(attachment)
    body = openssl("smime", "-encrypt", *options, "-from", sender, "-to", AGENCY_ADDRESS,
                   "-subject", "Aanvraag Groeipakket", "-in", str(source), str(smime_pki.agency.certificate_path))
    assert b"message-id" not in body.lower()
    return body


def _numbers(seed: int) -> list[str]:
    return [insz.make(dt.date(2012, 1 + seed, 1 + n), 100 + n) for n in range(5)]


def _take(room: Mailroom, town: str, sender: str, run_id: str) -> int | None:
    """The arrival sensor's look and fetch_request, as the DAG runs them."""
    item = channel.first_waiting(sender)
    assert item is not None and set(item) == {"uid", "uidvalidity", "size"}, "XCom names the message, nothing it says"
    info = RunInfo(exchange_date=room.day, dag_id=f"method1_{town}", run_id=run_id, task_id="fetch_request", try_number=1)
    try:
        return steps.fetch_request(room.protocols[town], item, info)
    except ExchangeRefused:
        return None


def _items() -> list[RetentionItem]:
    with session_scope() as session:
        return list(session.scalars(sa.select(RetentionItem).where(RetentionItem.where == "imap").order_by(RetentionItem.id)))


def _only_due(item_id: int, room: Mailroom) -> dt.date:
    """Make ``item_id`` the one IMAP item due on the returned day; the others wait."""
    with session_scope() as session:
        for item in session.scalars(sa.select(RetentionItem).where(RetentionItem.deleted_at.is_(None))):
            item.deadline = room.day if item.id == item_id else room.day + dt.timedelta(days=365)
    return room.day


def _all_messages(servers) -> dict[str, list[bytes]]:
    return {folder: servers.messages("agency", folder) for folder in ("INBOX", "Processed", "Rejected")}


@pytest.fixture
def filled(mailroom, openssl, smime_pki, tmp_path) -> Mailroom:
    """Processed holds Gent's and Antwerpen's taken requests; Rejected a quarantined request of Gent
    and refused (3DES) messages of both — none with a Message-ID. An unrelated older message sits in
    each folder first, so a message's UID there differs from its INBOX UID."""
    room, servers = mailroom, mailroom.servers
    for folder in ("Processed", "Rejected"):
        servers.inject("agency", b"From: someone@else.test\r\nSubject: old\r\n\r\nolder mail\r\n", mailbox=folder)
    aes = ("-aes256", "-binary")
    plan = [
        ("gent", GENT_ADDRESS, encrypted_request(_numbers(0), room.passwords["gent"]), aes),
        ("antwerpen", ANTWERPEN_ADDRESS, encrypted_request(_numbers(1), room.passwords["antwerpen"]), aes),
        ("gent", GENT_ADDRESS, encrypted_request(_numbers(2), room.passwords["gent"] + "x"), aes),  # quarantined later
        ("gent", GENT_ADDRESS, encrypted_request(_numbers(3), room.passwords["gent"]), ("-binary",)),  # 3DES
        ("antwerpen", ANTWERPEN_ADDRESS, encrypted_request(_numbers(4), room.passwords["antwerpen"]), ("-binary",)),
    ]
    for n, (town, sender, attachment, options) in enumerate(plan):
        servers.inject("agency", _openssl_mail(openssl, smime_pki, tmp_path, attachment, sender, *options))
        exchange_id = _take(room, town, sender, f"run-{n}")
        if n == 2:
            info = RunInfo(exchange_date=room.day, dag_id="method1_gent", run_id="run-2", task_id="decrypt", try_number=1)
            with pytest.raises(ExchangeRefused):
                steps.decrypt_and_validate(exchange_id, info)
    folders = _all_messages(servers)
    assert folders["INBOX"] == [] and len(folders["Processed"]) == 3 and len(folders["Rejected"]) == 4
    return room


def test_each_item_deletes_exactly_its_own_message_and_certifies_what_matched(filled):
    room, servers = filled, filled.servers
    items = _items()
    assert sorted(i.kind for i in items) == ["quarantine", "rejected_message", "rejected_message",
                                             "request_message", "request_message"]
    assert all(i.sha256 and i.size and i.uid for i in items)

    for item in items:
        before = _all_messages(servers)
        folder = item.location.split(":")[1]
        own = [m for m in before[folder] if hashlib.sha256(m).hexdigest() == item.sha256]
        assert len(own) == 1, "the recorded digest is the message's own"

        report = runner.delete_due(_only_due(item.id, room), actor=ACTOR)

        assert [c.item_id for c in report.certificates] == [item.id] and report.missing == []
        after = _all_messages(servers)
        expected = {f: [m for m in before[f] if f != folder or m != own[0]] for f in before}
        assert after == expected, "exactly this message went; every other one is still there, unchanged"
        [certificate] = [r for r in records("retention.deleted") if r.counts["item"] == item.id]
        assert certificate.outcome == "success"
        assert f"message in {folder} (UIDVALIDITY {item.uidvalidity}, UID {item.uid})" in certificate.message
        assert f"SHA-256 {item.sha256} matched" in certificate.message
        assert "Aanvraag" not in certificate.message and "@" not in certificate.message.split("rule:")[0]
    assert servers.messages("agency", "Processed") == servers.messages("agency", "Rejected") != []  # the older mail
    assert verify()


def test_a_message_moved_by_a_person_is_found_by_its_digest(filled):
    room, servers = filled, filled.servers
    [item] = [i for i in _items() if i.kind == "quarantine"]
    with servers.imap("agency") as client:  # someone drags it back from Rejected to Processed
        client.select('"Rejected"')
        _, found = client.uid("SEARCH", None, "ALL")
        for uid in found[0].split():
            _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
            if hashlib.sha256(next(p[1] for p in parts if isinstance(p, tuple))).hexdigest() == item.sha256:
                client.uid("MOVE", uid, '"Processed"')
    processed = len(servers.messages("agency", "Processed"))

    report = runner.delete_due(_only_due(item.id, room), actor=ACTOR)

    assert [c.item_id for c in report.certificates] == [item.id]
    assert "message in Processed" in report.certificates[0].verified
    assert len(servers.messages("agency", "Processed")) == processed - 1


def test_a_message_that_is_gone_is_reported_missing_never_certified(filled):
    room, servers = filled, filled.servers
    [item] = [i for i in _items() if i.kind == "request_message"][:1]
    with servers.imap("agency") as client:  # deleted by a person, outside the system
        client.select('"Processed"')
        client.uid("STORE", str(item.uid), "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
    left = _all_messages(servers)
    day = _only_due(item.id, room)

    report = runner.delete_due(day, actor=ACTOR)

    assert report.certificates == [] and report.missing == [item.id]
    assert report.summary()["missing"] == 1 and report.summary()["deleted"] == 0
    assert _all_messages(servers) == left, "nothing else was taken in its place"
    assert [r for r in records("retention.deleted")] == []
    [missing] = records("retention.missing")
    assert missing.outcome == "missing" and "no copy with the recorded content was found" in missing.message
    with session_scope() as session:
        pending = session.get(RetentionItem, item.id)
        assert pending.deleted_at is None and pending.missing_since == day

    # Looked for again on later runs (one fact, not one a day), then closed as missing: still no certificate.
    runner.delete_due(day + dt.timedelta(days=1), actor=ACTOR)
    assert len(records("retention.missing")) == 1
    runner.delete_due(day + dt.timedelta(days=runner.MISSING_LOOK_DAYS), actor=ACTOR)
    assert [r.outcome for r in records("retention.missing")] == ["missing", "missing"]
    assert "closed as missing" in records("retention.missing")[-1].message
    with session_scope() as session:
        closed = session.get(RetentionItem, item.id)
        assert closed.deleted_at is not None and closed.deletion_outcome == "missing"
    assert records("retention.deleted") == [] and _all_messages(servers) == left
    assert verify()


def test_moves_interrupted_after_the_server_moved_are_finished_by_the_retry(mailroom, openssl, smime_pki, tmp_path, monkeypatch):
    """A try killed right after the server moved a message (taken, or refused) leaves the ledger
    pending; the retry finds the message where it went, by its digest, and records it there."""
    room, servers = mailroom, mailroom.servers
    real_move = channel.mail.move_message

    def move_then_crash(*args, **kwargs):
        real_move(*args, **kwargs)
        raise ConnectionResetError("worker killed")

    for n, options in enumerate((("-aes256", "-binary"), ("-binary",))):  # taken; refused (3DES)
        attachment = encrypted_request(_numbers(n), room.passwords["gent"])
        servers.inject("agency", _openssl_mail(openssl, smime_pki, tmp_path, attachment, GENT_ADDRESS, *options))
        item = channel.first_waiting(GENT_ADDRESS)
        info = RunInfo(exchange_date=room.day, dag_id="method1_gent", run_id=f"crash-{n}", task_id="fetch_request", try_number=1)
        with monkeypatch.context() as patch:
            patch.setattr(channel.mail, "move_message", move_then_crash)
            with pytest.raises(ConnectionResetError):
                steps.fetch_request(room.protocols["gent"], item, info)
        assert servers.messages("agency", "INBOX") == []
        try:
            steps.fetch_request(room.protocols["gent"], item, info)
        except ExchangeRefused:
            assert n == 1
    [taken] = servers.messages("agency", "Processed")
    [refused] = servers.messages("agency", "Rejected")
    by_kind = {i.kind: i for i in _items()}
    assert by_kind["request_message"].sha256 == hashlib.sha256(taken).hexdigest()
    assert by_kind["rejected_message"].sha256 == hashlib.sha256(refused).hexdigest()
    assert len(records("request.rejected")) == 1
    report = runner.delete_due(room.day + dt.timedelta(days=400), actor=ACTOR)
    assert sorted(c.kind for c in report.certificates) == ["rejected_message", "request_message", "staging"]
    assert report.missing == []
    assert servers.messages("agency", "Processed") == servers.messages("agency", "Rejected") == []
