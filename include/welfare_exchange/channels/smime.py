"""The encrypted e-mail channel of Method 1: requests by IMAP, results by SMTP, S/MIME both ways.

How a protocol with channel ``smime`` is wired:

* **The agency's mailbox** (Airflow connection ``imap_agency``, type ``imap``) is shared by
  every municipality. A message belongs to a protocol when its From address is the
  protocol's ``sender_address`` *and* it passes :func:`welfare_exchange.transport.smime.decrypt`
  with the protocol's pinned ``sender_certificates`` (a signature, when present — required
  when ``require_signature`` — must come from one of them).
* **The agency's S/MIME identity** (connection ``smime_agency``: certificate and key in its
  extra) decrypts requests; its certificate's address is the From of what we send.
* **The protocol's ``channel_connection``** is the SMTP connection (type ``smtp``) through
  which this municipality's results and reports leave; usually every protocol names the
  agency's relay, ``smtp_agency``. The default ``smime_<NIS>`` lets one municipality get its
  own route.
* The result goes back **encrypted (AES-256) to the municipality's pinned certificate**, to
  the protocol's registered address — never to whatever From a message carried.

Once the attachment (the password-encrypted request workbook) is staged, the exchange goes
through exactly the same steps as an SFTP request.

The mailbox folders play the roles of the SFTP folders: ``INBOX`` = ``inbox/``,
``Processed`` = ``received/``, ``Rejected`` = ``quarantine/``. A message the S/MIME checks
refuse (unknown sender or certificate, 3DES and other ciphers the agency cannot decrypt, too
large, no or several attachments) never becomes an exchange: it is moved to ``Rejected``,
audited, and — unless the sender is unknown — the registered address gets a report without
personal data.

Nothing is sent twice: every message the agency sends has a Message-ID derived from what it
is about (:func:`welfare_exchange.transport.mail.make_message_id`), and the ledger records
the intent before and the send after, keyed on the exchange.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import logging
from types import SimpleNamespace
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from welfare_exchange import audit, failures, ledger, xlsx
from welfare_exchange.channels.base import Channel, Inbound, Sent
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.channels.common import (
    result_file_name,
    REQUEST_CATEGORIES,
    RESULT_CATEGORIES,
    ExchangeRefused,
    load_exchange,
    open_request_exchange,
    report_text,
    require_gate,
)
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.intake import IntakeError
from welfare_exchange.protocols import get
from welfare_exchange.settings import get_mail_settings
from welfare_exchange.staging import RESULT_FILE, Staging
from welfare_exchange.transport import mail, smime

log = logging.getLogger(__name__)

INBOX = "INBOX"
PROCESSED = mail.PROCESSED_MAILBOX
REJECTED = mail.REJECTED_MAILBOX

#: Where an operator finds a refused request and what the municipality got.
REFUSAL_HINT = (
    "The message was moved to the Rejected folder of the agency's mailbox and the municipality "
    "got a report by e-mail."
)

#: Name given to an attachment that came without one (``openssl smime -encrypt -in file``).
UNNAMED_ATTACHMENT = "aanvraag.xlsx"


def imap_conn_id() -> str:
    """The agency mailbox's Airflow connection (``WELFARE_EXCHANGE_IMAP_CONN_ID``, default ``imap_agency``)."""
    return get_mail_settings().imap_conn_id


def smime_conn_id() -> str:
    """The agency's S/MIME identity connection (``WELFARE_EXCHANGE_SMIME_CONN_ID``, default ``smime_agency``)."""
    return get_mail_settings().smime_conn_id


def max_message_bytes() -> int:
    """Largest request message accepted (``WELFARE_EXCHANGE_MAIL_MAX_BYTES``, default 25 MiB)."""
    return get_mail_settings().max_message_bytes


# --------------------------------------------------------------------------- configuration


def sender_address(protocol: Protocol) -> str:
    if not protocol.sender_address:
        raise ProtocolError(
            f"protocol {protocol.id} uses the e-mail channel but registers no sender address: "
            "set it (protocol create --sender-address) before any request can be tied to it"
        )
    return protocol.sender_address.strip().lower()


def pinned_certificates(protocol: Protocol):
    """The municipality's certificates registered in the protocol (PEM in ``sender_certificates``)."""
    pems = protocol.sender_certificates or []
    if not pems:
        raise ProtocolError(
            f"protocol {protocol.id} uses the e-mail channel but registers no certificate of the "
            "municipality: register the one its DPO sent (protocol create --sender-certificate FILE); "
            "without it no request can be trusted and no result encrypted"
        )
    return [smime.load_certificate(pem) for pem in pems]


def recipient_certificate(protocol: Protocol, on: dt.date, prefer=None):
    """The certificate to encrypt to: the signer's when it is pinned, else the valid one that lasts longest."""
    certificates = pinned_certificates(protocol)
    valid = [c for c in certificates if c.not_valid_before_utc.date() <= on <= c.not_valid_after_utc.date()]
    if prefer is not None and any(smime.certificate_fingerprint(c) == prefer for c in valid):
        return next(c for c in valid if smime.certificate_fingerprint(c) == prefer)
    if not valid:
        # encrypt() raises the precise expired / not-yet-valid error for this one.
        return max(certificates, key=lambda c: c.not_valid_after_utc)
    return max(valid, key=lambda c: c.not_valid_after_utc)


def agency_identity():
    """``(certificate, key, address, domain)`` of the agency, from the ``smime_agency`` connection."""
    certificate, key = mail.load_agency_identity(smime_conn_id())
    addresses = smime.certificate_emails(certificate)
    if not addresses:
        raise ProtocolError(
            f"the agency certificate in connection {smime_conn_id()!r} names no e-mail address: "
            "results must come from the address the certificate is issued for"
        )
    address = addresses[0]
    return certificate, key, address, address.rpartition("@")[2]


def warn_expiring(protocol: Protocol, run: RunInfo, agency_certificate=None) -> list[str]:
    """Audit and log every certificate of this channel that expires within 30 days of the exchange date.

    Once per certificate, protocol and exchange date (the audit fact is keyed on them), so a
    re-run does not repeat it; the log line appears on every try, where an operator looks.
    """
    certificates = [("agency", agency_certificate)] if agency_certificate is not None else []
    certificates += [("municipality", c) for c in pinned_certificates(protocol)]
    warnings = []
    for role, certificate in certificates:
        warning = smime.certificate_expiry_warning(certificate, run.exchange_date)
        if warning is None:
            continue
        if role == "municipality" and certificate.not_valid_after_utc.date() < run.exchange_date and len(certificates) > 1:
            # An old certificate kept next to its renewal: say it once, without alarm.
            warning = f"(registered, no longer used) {warning}"
        warnings.append(warning)
        log.warning("protocol %s: %s certificate: %s", protocol.id, role, warning)
        with session_scope() as session:
            audit.record(
                session, "certificate.expiring", "warning", actor=run.actor, protocol=get(session, protocol.id),
                message=f"{role} certificate: {warning}",
                fact_key=f"cert-expiry:p{protocol.id}:{smime.certificate_fingerprint(certificate)}:{run.exchange_date.isoformat()}",
            )
    return warnings


# ------------------------------------------------------------------------------------ IMAP


def _item(message: mail.RawMessage) -> dict[str, Any]:
    """What the arrival sensor hands to ``fetch_request`` (XCom): where the message is in the
    INBOX, no content and no header (a Message-ID is the sender's to choose)."""
    return {"uid": message.uid, "uidvalidity": message.uidvalidity, "size": message.size}


def _ref(item: dict[str, Any]) -> str:
    """A stable name of one INBOX message in the ledger, without digit runs (hashed)."""
    raw = f"{item.get('uidvalidity')}:{item.get('uid')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _located(moved: mail.MessageLocation) -> dict[str, Any]:
    """Where a moved message is now and what it is (the ledger keeps it to find it again)."""
    return {"mailbox": moved.mailbox, "uidvalidity": moved.uidvalidity, "uid": moved.uid,
            "sha256": moved.sha256, "size": moved.size}


def _digest(message: mail.RawMessage) -> str:
    """SHA-256 of a message in the INBOX: of its bytes, or read on the server when not downloaded."""
    if message.data is not None:
        return hashlib.sha256(message.data).hexdigest()
    found = mail.locate(imap_conn_id(), INBOX, uidvalidity=message.uidvalidity, uid=message.uid)
    if found is None:
        raise mail.MessageMissing("the message to refuse is no longer in the agency's INBOX (moved by a person?)")
    return found.sha256


def _move(detail: dict[str, Any], *, mailbox: str, to: str) -> mail.MessageLocation:
    """Move the message ``detail`` records (its digest, its UID as a hint) from ``mailbox`` to ``to``."""
    return mail.move_message(
        imap_conn_id(), mailbox=mailbox, to=to, sha256=detail.get("sha256"), size=detail.get("size"),
        uidvalidity=detail.get("uidvalidity"), uid=detail.get("uid"),
    )


def waiting_messages(conn_id: str | None = None, *, sender: str | None = None, limit: int = 500) -> list[mail.RawMessage]:
    """Headers of the messages waiting in the agency's INBOX, oldest first; bodies are not downloaded.

    ``max_bytes=0`` makes :func:`~welfare_exchange.transport.mail.fetch_unseen` list every
    message without downloading it: a sensor looking every minute for every municipality
    must not pull megabytes each time.

    :param conn_id: the IMAP connection (default :func:`imap_conn_id`).
    :param sender: only messages whose From is this address.
    :param limit: at most this many messages looked at.
    """
    listed = mail.fetch_unseen(conn_id or imap_conn_id(), max_bytes=0, limit=limit)
    if sender is not None:
        listed = [m for m in listed if m.sender == sender.lower()]
    return listed


def first_waiting(protocol_sender: str, conn_id: str | None = None) -> dict[str, Any] | None:
    """The oldest message from ``protocol_sender`` still in the INBOX, as the sensor's XCom value."""
    listed = waiting_messages(conn_id, sender=protocol_sender)
    return _item(listed[0]) if listed else None


def fetch_message(
    item: dict[str, Any], *, conn_id: str | None = None, max_bytes: int | None = None, mailbox: str = INBOX,
) -> mail.RawMessage | None:
    """Download the one message ``item`` names, by its INBOX UID while UIDVALIDITY holds.

    Read-only (``EXAMINE``, ``BODY.PEEK``). ``None`` when it is no longer in the INBOX (or the
    INBOX was renumbered: the sensor then finds it again under its new UID). A message larger
    than ``max_bytes`` comes back with ``data=None`` (refuse it as too large).
    """
    limit = max_message_bytes() if max_bytes is None else max_bytes
    # transport.mail lists and moves; fetching one known message is this channel's need, so
    # it is built here from the same (tested) IMAP helpers.
    with mail._imap_client(conn_id or imap_conn_id(), None) as client:
        uidvalidity = mail._select(client, mailbox, readonly=True)
        if uidvalidity != item.get("uidvalidity"):
            return None
        found = mail._check(client.uid("SEARCH", None, "UID", str(item["uid"])), "search the mailbox")
        uids = sorted(int(u) for u in (found[0] or b"").split())
        if not uids:
            return None
        uid = uids[0]
        meta = mail._fetch_parts(
            mail._check(
                client.uid("FETCH", str(uid), "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM MESSAGE-ID)])"),
                "read message headers",
            )
        ).get(uid)
        if meta is None:
            return None
        size = int(meta.get("size", 0))
        sender, message_id = mail._sender_and_id(meta.get("header"))  # type: ignore[arg-type]
        body = None
        if size <= limit:
            body = mail._fetch_parts(mail._check(client.uid("FETCH", str(uid), "(UID BODY.PEEK[])"), "download a message"))
            body = body.get(uid, {}).get("body")
        return mail.RawMessage(uid=uid, uidvalidity=uidvalidity, message_id=message_id, sender=sender, size=size, data=body)


# ----------------------------------------------------------------------------- sending


def send_once(
    protocol: Protocol, *, key: str, kind: str, exchange_id: int | None, subject: str, payload: bytes,
    filename: str, message_key: str, today: dt.date, run: RunInfo, content_type: str = "application/octet-stream",
    encrypt: bool = True, prefer_certificate: str | None = None,
) -> dict[str, Any]:
    """Send one message to the protocol's registered address — once, whatever re-runs happen.

    The ledger records the intent (``pending``, with the Message-ID) before the SMTP
    conversation and ``done`` after the server accepted it. A send the server refused is
    forgotten so the retry sends; an intent found still pending means an earlier try was
    killed in the middle of sending: the same message (same Message-ID, which mail systems
    treat as one message) is sent again rather than risk the municipality never getting it,
    and that is audited.

    ``encrypt=False`` sends ``payload`` as a plain-text body — only for reports without
    personal data when no valid certificate of the municipality exists to encrypt to.
    """
    _, _, agency_address, domain = agency_identity()
    message_id = mail.make_message_id(message_key, domain)
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        if effect is not None and effect.state == "done":
            log.info("message %s was already sent at %s; nothing sent again", effect.target, effect.done_at)
            return {"message_id": effect.target, "already_sent": True, "sha256": effect.sha256, **(effect.detail or {})}
        interrupted = effect is not None
    to = sender_address(protocol)
    fingerprint = None
    if encrypt:
        certificate = recipient_certificate(protocol, today, prefer_certificate)
        fingerprint = smime.certificate_fingerprint(certificate)
        message = smime.encrypt(
            payload, certificate, filename=filename, subject=subject, sender=agency_address, to=to,
            message_id=message_id, content_type=content_type, today=today,
        )
    else:
        message = _plain_message(payload, subject=subject, sender=agency_address, to=to, message_id=message_id)
    if interrupted:  # (the intent an earlier try recorded is still there: this try's begin adds nothing)
        log.warning("an earlier try was interrupted while sending message %s: sending the same message again", message_id)
        with session_scope() as session:
            audit.record(
                session, f"{kind}.resent", "warning", actor=run.actor, protocol=get(session, protocol.id),
                exchange_id=exchange_id,
                message=f"an earlier try was interrupted while sending {message_id}; the same message "
                "(same Message-ID) was sent again so that it is not lost",
                fact_key=f"{key}:resent:{run.run_id}:{run.try_number}",
            )
    # The intent is recorded only now: a message that could not even be built (no valid
    # certificate) was certainly not sent. It is forgotten when the server did not accept the
    # message, so the retry sends. (The one case where it may have: the connection lost after the
    # message's final dot, before the server's 250; the retry then sends the same Message-ID
    # again, which is the lesser harm.)
    with ledger.side_effect(key, kind=kind, exchange_id=exchange_id, target=message_id, forget_on_error=True) as effect:
        mail.send(protocol.channel_connection, message, sender=agency_address, to=to)
        detail = {"message_id": message_id, "bytes": len(message), "encrypted": encrypt}
        if fingerprint:
            detail["recipient_certificate"] = fingerprint
        effect.complete(sha256=hashlib.sha256(payload).hexdigest(), detail=detail)
    return {**detail, "already_sent": False}


def _plain_message(text: bytes, *, subject: str, sender: str, to: str, message_id: str) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import formatdate

    message = EmailMessage(policy=SMTP)
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(text.decode("utf-8"))
    return message.as_bytes(policy=SMTP)


def _has_valid_certificate(protocol: Protocol, on: dt.date) -> bool:
    try:
        return any(c.not_valid_before_utc.date() <= on <= c.not_valid_after_utc.date() for c in pinned_certificates(protocol))
    except (ProtocolError, InputError):
        return False


# ----------------------------------------------------------------------------- receive


def fetch_request(protocol_id: int, item: dict[str, Any], run: RunInfo) -> int | None:
    """Download the message, open it (S/MIME), seal its attachment into staging.

    The attachment — the municipality's encrypted request workbook — is what the exchange is
    keyed on (its SHA-256), so the same file sent twice, by mail or otherwise, is a
    duplicate. The message then moves from ``INBOX`` to ``Processed``. A message the S/MIME
    checks refuse is moved to ``Rejected``, audited and answered with a report, and
    :class:`ExchangeRefused` says why.
    """
    with session_scope() as session:
        protocol = get(session, protocol_id)
        already = session.query(Exchange).filter_by(protocol_id=protocol_id, run_id=run.run_id).one_or_none()
        rejected = ledger.find_side_effect(session, _rejected_key(protocol_id, item))
        rejected = (rejected.state, rejected.detail) if rejected is not None else None
        if (already is None or run.run_id is None) and (rejected is None or rejected[0] != "done"):
            require_gate(protocol, run.exchange_date)  # the ledger first: a message already taken or refused needs no gate
        expected_sender = sender_address(protocol)
        certificates = pinned_certificates(protocol)
    if already is not None and run.run_id is not None:
        return _finish_fetch(protocol_id, already.id, item, run)  # a retry of this task
    if rejected is not None and rejected[0] == "done":  # a re-run of a refused message: refuse again
        raise ExchangeRefused(_refusal_text(protocol, rejected[1]["code"], rejected[1]["reason"]))
    if rejected is not None and (rejected[1] or {}).get("code"):  # a refusal an earlier try did not finish
        err = smime.SmimeError(rejected[1]["reason"], code=rejected[1]["code"])
        raw = mail.RawMessage(uid=int(item["uid"]), uidvalidity=int(item["uidvalidity"]), message_id=None,
                              sender=expected_sender, size=int(item.get("size") or 0), data=None)
        reject(protocol_id, raw, err, run)
        raise ExchangeRefused(_refusal_text(protocol, err.code, str(err)))

    message, opened = _take_message(protocol, item, run, expected_sender=expected_sender, certificates=certificates)
    if message is None:
        raise InputError(
            f"protocol {protocol_id}: the message the sensor found is no longer in the agency's INBOX "
            "(moved by a person or another run): clear wait_for_request to look for the next one"
        )
    attachment = opened.attachment
    digest, size = hashlib.sha256(attachment).hexdigest(), len(attachment)
    message_sha = hashlib.sha256(message.data).hexdigest()
    name = opened.attachments[0][0] or UNNAMED_ATTACHMENT
    signed = smime.certificate_fingerprint(opened.signed_by) if opened.signed_by is not None else None
    with session_scope() as session:
        protocol = get(session, protocol_id)
        exchange, duplicate_of = open_request_exchange(
            session, protocol, digest=digest, name=name, size=size, run=run,
            source="the request attached to an e-mail",
        )
        if duplicate_of is None:
            Staging(protocol_id, exchange.id).write_request(attachment)
            effect = ledger.begin_side_effect(session, f"exchange:{exchange.id}:received", kind="received", exchange_id=exchange.id)
            # So a retry finds the message without the sensor's XCom (by its digest), and the
            # result goes to the signer's certificate.
            effect.detail = {**_item(message), "sha256": message_sha, "signed_by": signed}
            audit.record(
                session, "request.fetched", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                data_categories=REQUEST_CATEGORIES,
                file_hashes={"request": digest, "message": message_sha},
                counts={"bytes": size, "message_bytes": message.size},
                message=f"request received by e-mail, S/MIME {opened.cipher}, "
                + (f"signed by the registered certificate SHA-256 {signed[:16]}…" if signed else "not signed")
                + "; the attachment is sealed in staging",
                fact_key=f"exchange:{exchange.id}:fetched",
            )
    del attachment, opened
    if duplicate_of is not None:
        moved = _move({**_item(message), "sha256": message_sha}, mailbox=INBOX, to=PROCESSED)
        with session_scope() as session:
            protocol = get(session, protocol_id)
            _schedule_message(session, protocol, duplicate_of, "request_message", _located(moved),
                              *ledger.request_deadline(protocol, run.exchange_date))
        log.info("duplicate request: same attachment as exchange %s; message moved to %s, not processed again", duplicate_of, PROCESSED)
        return None
    return _finish_fetch(protocol_id, exchange.id, _item(message), run)


def _open(protocol: Protocol, message: mail.RawMessage, run: RunInfo, *, expected_sender: str, certificates, limit: int):
    """S/MIME-open a downloaded message: decrypted with the agency's key, From = the registered
    sender, signed by a pinned certificate (required when the protocol says so), allowed cipher, size."""
    agency_certificate, agency_key, _, _ = agency_identity()
    if message.too_large:
        raise mail.oversized_error(message, limit)
    return smime.decrypt(
        message.data, agency_certificate, agency_key, expected_senders=expected_sender,
        sender_certificates=certificates, require_signature=protocol.require_signature,
        max_bytes=limit, today=run.exchange_date,
    )


def _take_message(
    protocol: Protocol, item: dict[str, Any], run: RunInfo, *, expected_sender: str, certificates,
    accept: Callable[[Any], None] | None = None,
):
    """Download the INBOX message ``item`` names and open it; ``(None, None)`` when it is no longer there.

    A message the checks refuse — S/MIME's, or ``accept(opened)`` raising :class:`SmimeError` — is
    moved to ``Rejected``, audited and answered (:func:`reject`), and :class:`ExchangeRefused` says why.
    Method 1 requests and every other file a municipality mails (referral feedback) come through here.
    """
    agency_certificate, _, _, _ = agency_identity()
    warn_expiring(protocol, run, agency_certificate)
    limit = max_message_bytes()
    message = fetch_message(item, max_bytes=limit)
    if message is None:
        return None, None
    try:
        opened = _open(protocol, message, run, expected_sender=expected_sender, certificates=certificates, limit=limit)
        if accept is not None:
            accept(opened)
    except smime.SmimeError as err:
        reject(protocol.id, message, err, run)
        raise ExchangeRefused(_refusal_text(protocol, err.code, str(err))) from None
    return message, opened


def _finish_fetch(protocol_id: int, exchange_id: int, item: dict[str, Any], run: RunInfo) -> int:
    """Move the message from ``INBOX`` to ``Processed`` (once) and record the deletion deadlines."""
    key = f"exchange:{exchange_id}:received"
    with ledger.side_effect(key, kind="received", exchange_id=exchange_id) as effect:
        if effect.pending:
            # Moved already by a try that crashed before recording it: found in Processed by its digest.
            noted = {**item, **(effect.detail or {})}  # the digest the fetch noted before the move
            moved = {**noted, **_located(_move(noted, mailbox=INBOX, to=PROCESSED))}
            with session_scope() as session:
                exchange, _ = load_exchange(session, exchange_id)
            effect.complete(sha256=exchange.request_sha256, detail=moved)
    detail = dict(effect.detail or item)
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        deadline, rule = ledger.request_deadline(protocol, exchange.exchange_date)
        staging = Staging(protocol.id, exchange.id)
        if not ledger.is_done(session, f"exchange:{exchange_id}:quarantined"):  # else the item followed the message
            _schedule_message(session, protocol, exchange.id, "request_message", detail, deadline, rule)
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange.id, kind="staging", where=staging.where,
            location=staging.location(), deadline=deadline, rule=rule,
        )
    return exchange_id


def _message_location(mailbox: str, message_sha: str) -> str:
    """A message's retention location: folder and digest (unique per message; never shown as is)."""
    return f"{imap_conn_id()}:{mailbox}:{message_sha}"


def _schedule_message(
    session, protocol: Protocol, exchange_id: int | None, kind: str, located: dict[str, Any], deadline: dt.date,
    rule: str, *, moved_from: tuple[str, str] | None = None,
) -> None:
    """Record when a kept message is deleted, identified by its digest (its UID as a hint).

    ``moved_from`` (kind, folder): the message was moved from there, and its pending item follows it.
    """
    if not located.get("sha256"):
        log.warning("protocol %s: a kept message has no recorded digest; it cannot be scheduled for deletion", protocol.id)
        return
    location = _message_location(located["mailbox"], located["sha256"])
    fields = {"deadline": deadline, "rule": rule, "uidvalidity": located.get("uidvalidity"), "uid": located.get("uid")}
    if moved_from is not None and ledger.move_copy(
        session, moved_from[0], _message_location(moved_from[1], located["sha256"]), exchange_id=exchange_id,
        kind=kind, location=location, **fields
    ):
        return
    ledger.schedule_deletion(
        session, protocol_id=protocol.id, exchange_id=exchange_id, kind=kind, where="imap", location=location,
        sha256=located["sha256"], size=located.get("size"), **fields,
    )


def _rejected_key(protocol_id: int | None, item: dict[str, Any]) -> str:
    return f"mail:p{protocol_id or 'none'}:{_ref(item)}:rejected"


def _refusal_text(protocol: Protocol, code: str, reason: str) -> str:
    return (
        f"protocol {protocol.id} ({protocol.municipality}): the e-mail request was refused ({code}): {reason} "
        f"{REFUSAL_HINT} Runbook: 'A request was refused'."
    )


def reject(protocol_id: int | None, message: mail.RawMessage, err: smime.SmimeError, run: RunInfo) -> None:
    """Move a refused message to ``Rejected``, audit it and report to the registered address (once each).

    ``protocol_id`` is ``None`` for a message no protocol knows (unknown sender): nobody is
    answered then — a reply would confirm to a stranger that the mailbox is read. Only a refusal
    the sender caused is moved and reported: a failure on the agency's side raises
    :class:`AgencySideError` (:func:`welfare_exchange.failures.refused_by_sender`).
    """
    failures.require_sender_refusal(err, f"protocol {protocol_id}: the message stays in {INBOX}")
    item = _item(message)
    key = _rejected_key(protocol_id, item)
    with ledger.side_effect(key, kind="rejected", target=REJECTED) as effect:
        located = dict(effect.detail or {})
        if effect.pending:
            # Its digest is noted before the move, so a retry finds it in Rejected; a message too
            # large to download is hashed in pieces on the server.
            digest = located.get("sha256") or _digest(message)
            with session_scope() as session:
                ledger.find_side_effect(session, key).detail = {**item, "sha256": digest, "code": err.code, "reason": str(err)}
            located = _located(_move({**item, "sha256": digest}, mailbox=INBOX, to=REJECTED))
            effect.complete(sha256=located["sha256"], detail={**located, "code": err.code, "reason": str(err)})
    message_sha = located.get("sha256")
    with session_scope() as session:
        protocol = get(session, protocol_id) if protocol_id is not None else None
        audit.record(
            session, "request.rejected", "refused", actor=run.actor, protocol=protocol,
            file_hashes={"message": message_sha} if message_sha else None, counts={"message_bytes": message.size},
            message=f"{err.code}: {err} (message moved to {REJECTED})", fact_key=key,
        )
        if protocol is not None:
            _schedule_message(session, protocol, None, "rejected_message", located,
                              *ledger.request_deadline(protocol, run.exchange_date))
    log.warning("request message refused (%s): %s", err.code, err)
    if protocol is None or err.code == "unknown_sender":
        return
    text = _rejection_report(protocol, err, message_sha, run.exchange_date)
    send_once(
        protocol, key=f"mail:p{protocol.id}:{_ref(item)}:report", kind="report", exchange_id=None,
        subject=f"Groeipakket: aanvraag geweigerd / request refused (protocol {protocol.id})", payload=text,
        filename="weigering.txt", content_type="text/plain", message_key=f"p{protocol.id}/{_ref(item)}/refusal-report",
        today=run.exchange_date, run=run, encrypt=_has_valid_certificate(protocol, run.exchange_date),
    )


def _rejection_report(protocol: Protocol, err: smime.SmimeError, message_sha: str | None, on: dt.date) -> bytes:
    """What the municipality is told about a refused message: the reason and what to do, no content."""
    lines = [
        "Groeipakket - uw aanvraag per e-mail werd geweigerd / your e-mailed request was refused",
        "",
        f"Lokaal bestuur / local authority: {protocol.municipality} (NIS {protocol.nis_code})",
        f"Protocol: {protocol.id}",
        f"Datum / date: {on.isoformat()}",
        f"SHA-256 van het bericht / of the message: {message_sha or 'not downloaded (too large)'}",
        "",
        f"Reden / reason: {err.code}",
        f"  {err}",
        "",
        "Versleutel de aanvraag met AES-256 voor het certificaat van het agentschap, bijvoorbeeld:",
        "Encrypt the request with AES-256 to the agency's certificate, for example:",
        "  openssl smime -encrypt -aes256 -binary -in aanvraag.xlsx agentschap.pem",
        "Het bericht werd niet verwerkt. / The message was not processed.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


# ----------------------------------------------------------------------------- quarantine


def quarantine(exchange_id: int, err: IntakeError, run: RunInfo) -> None:
    """Move the request message from ``Processed`` to ``Rejected``, mail a report, record it all (once each)."""
    key = f"exchange:{exchange_id}:quarantined"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        received = ledger.find_side_effect(session, f"exchange:{exchange_id}:received")
        item = dict(received.detail or {}) if received is not None else {}
    with ledger.side_effect(key, kind="quarantined", exchange_id=exchange_id, target=REJECTED) as effect:
        if effect.pending:
            if item.get("sha256"):
                # Found in Processed by its digest (the UID the move was given is only a hint).
                item = {**item, **_located(_move(item, mailbox=item.get("mailbox", PROCESSED), to=REJECTED))}
            else:  # received before messages were recorded by digest: nothing identifies it safely
                log.warning("exchange %s: the request message has no recorded digest; it stays in %s", exchange_id, PROCESSED)
            effect.complete(detail=item)
    send_once(
        protocol, key=f"exchange:{exchange_id}:report", kind="report", exchange_id=exchange_id,
        subject=f"Groeipakket: validatierapport uitwisseling {exchange_id} / validation report",
        payload=report_text(protocol, exchange, err), filename=f"validatierapport-exchange-{exchange_id}.txt",
        content_type="text/plain", message_key=f"exchange/{protocol.id}/{exchange_id}/validation-report",
        today=exchange.exchange_date, run=run, encrypt=_has_valid_certificate(protocol, exchange.exchange_date),
    )
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        located = ledger.find_side_effect(session, key).detail or {}
        ledger.update_exchange(session, exchange, state="quarantined", failure_code=err.code)
        if located.get("mailbox") == REJECTED:
            _schedule_message(
                session, protocol, exchange_id, "quarantine", located,
                *ledger.request_deadline(protocol, exchange.exchange_date), moved_from=("request_message", PROCESSED),
            )
        audit.record(
            session, "request.quarantined", "refused", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            file_hashes={"request": exchange.request_sha256}, message=f"{err.code}: {err}",
            fact_key=f"exchange:{exchange_id}:quarantined",
        )


# ----------------------------------------------------------------------------- deliver


def result_message_id(protocol: Protocol, exchange: Exchange, domain: str) -> str:
    """The Message-ID of the e-mail carrying this exchange's result: a function of the exchange."""
    return mail.make_message_id(f"exchange/{protocol.id}/{exchange.id}/{exchange.result_sha256}/result", domain)


def deliver(exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Mail the result, S/MIME-encrypted (AES-256) to the municipality's certificate — exactly once.

    The ledger's side effect ``exchange:<id>:delivered`` holds the Message-ID; it is asked
    before anything is built or sent. The caller has just re-checked the protocol gate.
    """
    key = f"exchange:{exchange_id}:delivered"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        name = result_file_name(protocol, exchange)
        effect = ledger.find_side_effect(session, key)
        done = effect is not None and effect.state == "done"
        if done:
            log.info("exchange %s was already delivered at %s as %s; nothing sent again", exchange_id, effect.done_at, effect.target)
            # The send is recorded apart from the exchange's state and fact: a try that stopped
            # in between is completed below (both idempotent).
            sent = {"message_id": effect.target, "already_sent": True, **(effect.detail or {})}
            payload_bytes, digest = None, effect.sha256
        signer = (ledger.find_side_effect(session, f"exchange:{exchange_id}:received").detail or {}).get("signed_by")
    if not done:
        payload = Staging(protocol.id, exchange.id).read_file(RESULT_FILE)
        payload_bytes, digest = len(payload), hashlib.sha256(payload).hexdigest()
        if digest != exchange.result_sha256:
            raise RuntimeError(f"exchange {exchange_id}: the staged result's hash differs from the built result; nothing sent")
        sent = send_once(
            protocol, key=key, kind="delivered", exchange_id=exchange_id,
            subject=f"Groeipakket: resultaat uitwisseling {exchange_id} / result of exchange {exchange_id}",
            payload=payload, filename=name,
            content_type=xlsx.CONTENT_TYPE,
            message_key=f"exchange/{protocol.id}/{exchange.id}/{exchange.result_sha256}/result",
            today=exchange.exchange_date, run=run, prefer_certificate=signer,
        )
        del payload
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        ledger.update_exchange(session, exchange, state="delivered")
        audit.record(
            session, "result.delivered", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=RESULT_CATEGORIES, file_hashes={"result": digest},
            counts={**({"bytes": payload_bytes} if payload_bytes is not None else {}), "message_bytes": sent.get("bytes", 0)},
            message=f"encrypted result {name!r} sent by e-mail, S/MIME AES-256 to the municipality's registered "
            f"certificate SHA-256 {str(sent.get('recipient_certificate', ''))[:16]}…, Message-ID {sent['message_id']}",
            fact_key=key,
        )
    return {"name": name, "sha256": digest, "message_id": sent["message_id"], "already_delivered": sent["already_sent"]}


def confirm_delivery(exchange_id: int, run: RunInfo) -> bool:
    """Whether the ledger records the result as sent.

    A send begun but not recorded cannot be confirmed from here (the municipality's mailbox is
    not ours to read): :func:`send_once` sends it again with the same Message-ID, gate permitting.
    """
    with session_scope() as session:
        return ledger.is_done(session, f"exchange:{exchange_id}:delivered")


# ----------------------------------------------------------------------------- retention


def schedule_retention(session, protocol: Protocol, exchange: Exchange, result_deadline: dt.date, request_deadline: dt.date) -> None:
    """Record the deletion deadline of the request message kept in the agency's mailbox.

    The result left the agency inside an e-mail: the copy in the municipality's mailbox is
    the municipality's to delete under the protocol; the agency's own copy is the staged
    result, covered by the staging deadline.
    """
    if protocol.delete_request_after_match:  # "delete the request as soon as matching is done"
        received = ledger.find_side_effect(session, f"exchange:{exchange.id}:received")
        if received is not None and received.detail:
            _schedule_message(session, protocol, exchange.id, "request_message", received.detail, request_deadline,
                              f"request: deleted as soon as matching is done (protocol {protocol.id})")


# ----------------------------------------------------------------------------- triage


def reject_unknown_senders(run: RunInfo, conn_id: str | None = None) -> dict[str, int]:
    """Move every waiting message whose sender no live e-mail protocol registers to ``Rejected``.

    The per-protocol sensors only take their own sender's messages; without this, mail from
    anyone else would sit in the INBOX for ever. Such messages are audited (the sender's
    domain only) and not answered. Senders of protocols still being prepared (draft,
    submitted, advised) or suspended are kept: their requests wait for the gate.
    """
    with session_scope() as session:
        known = {
            p.sender_address.strip().lower()
            for p in session.scalars(sa.select(Protocol).where(Protocol.channel == "smime"))
            if p.sender_address and p.status not in ("revoked", "expired")
        }
    refused = 0
    for message in waiting_messages(conn_id):
        if message.sender in known:
            continue
        shown = "@" + message.sender.rpartition("@")[2] if message.sender else "no single From address"
        err = smime.SmimeError(
            f"the message comes from {shown}, which no e-mail protocol registers as its sender: if a "
            "municipality sent it, register its address in its protocol and ask it to send again",
            code="unknown_sender",
        )
        reject(None, message, err, run)
        refused += 1
    return {"rejected": refused, "known_senders": len(known)}


# ----------------------------------------------------------------------------- the channel


def send_file(
    protocol: Protocol, *, key: str, kind: str, exchange_id: int | None, name: str, payload: bytes, subject: str,
    content_type: str, actor, attempt: str, today: dt.date, sensitive: bool = True, reference: str | None = None,
) -> Sent:
    """Mail ``payload`` as attachment ``name``, S/MIME (AES-256) to the municipality's pinned certificate — once.

    A report without personal data (``sensitive=False``) goes as plain text when no valid
    certificate of the municipality exists to encrypt to; anything else needs one.
    """
    encrypt = sensitive or _has_valid_certificate(protocol, today)
    sent = send_once(
        protocol, key=key, kind=kind, exchange_id=exchange_id, subject=subject, payload=payload, filename=name,
        content_type=content_type, message_key=reference or key.replace(":", "/"), today=today, encrypt=encrypt,
        run=SimpleNamespace(actor=actor, run_id=attempt, try_number=None),
    )
    fingerprint = str(sent.get("recipient_certificate", ""))[:16]
    how = (f"by e-mail, S/MIME AES-256 to the municipality's registered certificate SHA-256 {fingerprint}…, "
           f"Message-ID {sent['message_id']}") if sent.get("encrypted", True) else f"by e-mail, Message-ID {sent['message_id']}"
    if sent["already_sent"]:
        return Sent(sha256=sent.get("sha256") or "", size=int(sent.get("bytes", 0)), how=how, already_sent=True, detail=sent)
    return Sent(sha256=hashlib.sha256(payload).hexdigest(), size=len(payload), how=how, detail=sent)


def delete_message(
    location: str, *, sha256: str, size: int | None = None, uidvalidity: int | None = None,
    uid: int | None = None, before_delete: Callable[[str], None] | None = None,
) -> str | None:
    """Delete the kept message whose raw content has ``sha256``; what was verified, or ``None`` when
    no folder holds it (the caller reports it missing).

    The channel records each message it keeps as ``"<imap conn id>:<mailbox>:<SHA-256>"`` with
    the SHA-256 of the raw message and, as a hint, the UID the server gave it in that folder. The
    recorded folder is searched first (the hinted UID, then every message of that size), then the
    channel's other folders (a person may have moved it). A UID alone never decides — UIDs are per
    folder, and requests sent with the OpenSSL command line carry no Message-ID — so another
    municipality's message is never taken for ours.

    :param before_delete: called with the verification text just before the expunge.
    :raises welfare_exchange.transport.mail.MailTransportError: the server is unreachable or
        refuses: the item stays due and the retention run fails (and retries).
    """
    conn_id, mailbox = split_location(location)
    with mail._imap_client(conn_id, None) as client:
        for folder in (mailbox, *(f for f in KEPT_FOLDERS if f != mailbox)):
            hint = {"uidvalidity": uidvalidity, "uid": uid} if folder == mailbox else {}
            found = mail.find_message(client, folder, sha256=sha256, size=size, readonly=False, **hint)
            if found is None:
                continue
            verified = f"{found.describe()} matched (connection {conn_id!r})"
            if before_delete is not None:
                before_delete(verified)
            mail.delete_found(client, found)
            return verified
    return None


#: Where the channel keeps messages; a copy not in its recorded folder is looked for in the others.
KEPT_FOLDERS = (PROCESSED, REJECTED)


def split_location(location: str) -> tuple[str, str]:
    """``"<conn>:<mailbox>:<reference>"`` → ``(conn, mailbox)``."""
    conn_id, mailbox, ref = (location.split(":", 2) + ["", ""])[:3]
    if not conn_id or not mailbox or not ref:
        raise ValueError("an IMAP retention location must be '<connection id>:<mailbox>:<message reference>'")
    return conn_id, mailbox


def _delete_kept(item, before_delete: Callable[[str], None]) -> str | None:
    if item.sha256 is None:
        return None
    return delete_message(item.location, sha256=item.sha256, size=item.size, uidvalidity=item.uidvalidity,
                          uid=item.uid, before_delete=before_delete)


# ----------------------------------------------------------------------------- other files in


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


def _inbound(data: bytes, located: dict[str, Any]) -> Inbound:
    return Inbound(data=data, ref=f"{located['mailbox']}:{located['sha256']}",
                   location=_message_location(located["mailbox"], located["sha256"]),
                   sha256=located["sha256"], size=int(located.get("size") or 0))


def find_inbound(protocol: Protocol, patterns: tuple[str, ...], *, settle_seconds: float = 2.0) -> dict[str, Any] | None:
    """The oldest message from the protocol's registered sender in the INBOX (headers only), or ``None``.

    Its attachment's name is inside the encryption: :func:`take_inbound` checks it against ``patterns``.
    """
    del patterns, settle_seconds  # a message arrives whole
    return first_waiting(sender_address(protocol), imap_conn_id())


def take_inbound(protocol: Protocol, item: dict[str, Any], patterns: tuple[str, ...], *, key: str, run: RunInfo) -> Inbound:
    """Take the message ``item`` names exactly as a Method 1 request by mail: S/MIME-decrypted with the
    agency's key, sender and signature checked against the protocol's pinned certificates, one
    attachment — whose name must match ``patterns`` — then moved from ``INBOX`` to ``Processed``,
    once per ``key``. A refused message goes to ``Rejected`` with a report (:func:`reject`) and
    :class:`ExchangeRefused` is raised. A retry (or a re-run) reads the message again from where
    the ledger says it lies.
    """
    expected_sender, certificates = sender_address(protocol), pinned_certificates(protocol)
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        state, detail = (effect.state, dict(effect.detail or {})) if effect is not None else (None, {})
    if state != "done":

        def accept(opened) -> None:
            name = opened.attachments[0][0] if len(opened.attachments) == 1 else None
            if not name or not _matches(name, patterns):
                raise smime.SmimeError(
                    "the attachment is not named like a feedback file (" + ", ".join(patterns) + ")", code="not_feedback",
                )

        message, opened = _take_message(protocol, item, run, expected_sender=expected_sender, certificates=certificates,
                                        accept=accept)
        if message is None and not detail.get("sha256"):
            raise InputError(
                f"protocol {protocol.id}: the message the sensor found is no longer in the agency's INBOX "
                "(moved by a person or another run): clear the waiting task to look for the next one"
            )
        if message is not None:
            detail = {**_item(message), "sha256": hashlib.sha256(message.data).hexdigest()}
            with session_scope() as session:
                ledger.begin_side_effect(session, key, kind="referral_feedback_received", exchange_id=None)
                ledger.find_side_effect(session, key).detail = detail
        # Moved already by a try that crashed before recording it: found in Processed by its digest.
        located = _located(_move(detail, mailbox=INBOX, to=PROCESSED))
        with session_scope() as session:
            ledger.complete_side_effect(session, key, sha256=located["sha256"], detail=located)
        if message is not None:
            return _inbound(opened.attachment, located)
        detail = located
    return _inbound(_read_kept(protocol, detail, run), detail)


def _read_kept(protocol: Protocol, located: dict[str, Any], run: RunInfo) -> bytes:
    """The attachment of a message already taken, read again from its folder (found by its digest)."""
    limit = max_message_bytes()
    with mail._imap_client(imap_conn_id(), None) as client:
        found = mail.find_message(client, located["mailbox"], sha256=located["sha256"], size=located.get("size"),
                                  uidvalidity=located.get("uidvalidity"), uid=located.get("uid"))
    if found is None:
        raise mail.MessageMissing(f"the message taken earlier is no longer in {located['mailbox']} of the agency's mailbox")
    message = fetch_message({"uid": found.uid, "uidvalidity": found.uidvalidity}, max_bytes=limit, mailbox=found.mailbox)
    if message is None:
        raise mail.MessageMissing(f"the message taken earlier is no longer in {located['mailbox']} of the agency's mailbox")
    opened = _open(protocol, message, run, expected_sender=sender_address(protocol),
                   certificates=pinned_certificates(protocol), limit=limit)
    return opened.attachment


def quarantine_inbound(protocol: Protocol, inbound: Inbound, *, key: str) -> Inbound:
    """Move a taken message the caller refused from ``Processed`` to ``Rejected`` (once per ``key``)."""
    mailbox, _, digest = inbound.ref.partition(":")
    with ledger.side_effect(key, kind="referral_feedback_quarantined", exchange_id=None, target=REJECTED) as effect:
        if effect.pending:
            effect.complete(sha256=digest, detail=_located(_move({"sha256": digest, "size": inbound.size}, mailbox=mailbox, to=REJECTED)))
    return _inbound(inbound.data, effect.detail)


class SmimeChannel(Channel):
    """The agency's mailbox (IMAP) for requests, SMTP for what leaves, S/MIME both ways."""

    name = "smime"
    places = ("imap",)
    sensor = "mailbox"
    sender_identity = True
    refusal_hint = REFUSAL_HINT

    def find_request(self, protocol_id, *, actor=None, on=None, **_):
        with session_scope() as session:
            address = sender_address(get(session, protocol_id))
        return first_waiting(address, imap_conn_id())

    def doc(self, entry):
        return {
            "how_sent": "as the attachment of an S/MIME-encrypted e-mail to the agency's mailbox",
            "wait": "looks (headers only) for a message from the protocol's registered sender, oldest first",
            "fetch": "S/MIME-decrypts with the agency's key, checks sender, pinned certificate, signature, cipher, size "
            "and the single attachment; seals the attachment into staging; a refused message goes to "
            "the `Rejected` folder with a report; the same file again is a *duplicate*",
            "refuse": "a bad file's message goes to `Rejected` with a report by e-mail",
            "deliver": "S/MIME (AES-256) to the municipality's pinned certificate over SMTP, with a Message-ID derived "
            "from the exchange; the ledger makes it happen once",
            "connections": f"Mailbox: `{imap_conn_id()}` · agency S/MIME identity: `{smime_conn_id()}` · SMTP: "
            f"`{entry['channel_connection']}` · key connection: `{entry['key_connection']}` (its password is the file password).",
        }

    def fetch_request(self, protocol_id, item, run):
        return fetch_request(protocol_id, item, run)

    def find_inbound(self, protocol, patterns, *, settle_seconds=2.0):
        return find_inbound(protocol, patterns, settle_seconds=settle_seconds)

    def take_inbound(self, protocol, handle, patterns, *, key, run):
        return take_inbound(protocol, handle, patterns, key=key, run=run)

    def quarantine_inbound(self, protocol, inbound, *, key):
        return quarantine_inbound(protocol, inbound, key=key)

    def quarantine(self, exchange_id, err, run):
        return quarantine(exchange_id, err, run)

    def deliver(self, exchange_id, run):
        return deliver(exchange_id, run)

    def confirm_delivery(self, exchange_id, run):
        return confirm_delivery(exchange_id, run)

    def schedule_retention(self, session, protocol, exchange, result_deadline, request_deadline):
        return schedule_retention(session, protocol, exchange, result_deadline, request_deadline)

    def send_file(self, protocol, **kwargs):
        return send_file(protocol, **kwargs)

    def shown_location(self, location):
        conn_id, mailbox, _ = (location.split(":", 2) + ["", ""])[:3]
        return f"{conn_id}:{mailbox}"

    def store_of(self, location):
        return split_location(location)[0]

    def deleter(self, store, **_):
        return _delete_kept


CHANNEL = SmimeChannel()
