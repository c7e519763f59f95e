"""The SFTP channel of Method 1: the municipality's chrooted ``inbox/`` and ``outbox/``.

A request is taken from ``inbox/`` (sealed into staging with the staging key) and moved to
``received/``; a refused one moves on to ``quarantine/`` with a validation report in
``outbox/``; the result is uploaded to ``outbox/`` as ``.part``, renamed and verified. Every
copy left on the server is recorded for deletion with its SHA-256 and size, and follows its
file when the file moves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import posixpath
from collections.abc import Callable
from typing import Any

from welfare_exchange import audit, ledger, untrusted
from welfare_exchange.channels.base import Channel, Deleter, Inbound, Sent
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.channels.common import (
    result_file_name,
    REQUEST_CATEGORIES,
    RESULT_CATEGORIES,
    load_exchange,
    open_request_exchange,
    report_text,
    require_gate,
)
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.errors import InputError
from welfare_exchange.channels import sftp_inbox as inbox
from welfare_exchange.intake import IntakeError, IntakeLimits
from welfare_exchange.protocols import get
from welfare_exchange.staging import RESULT_FILE, Staging
from welfare_exchange.transport import sftp

log = logging.getLogger(__name__)

INBOX, OUTBOX, RECEIVED, QUARANTINE = "inbox", "outbox", "received", "quarantine"

#: Where an operator finds a refused request and what the municipality got.
REFUSAL_HINT = "It was moved to quarantine/ and a validation report was put in the municipality's outbox/."


def _hook(protocol: Protocol):
    return sftp.sftp_hook(protocol.channel_connection)


# ----------------------------------------------------------------------------- receive


def fetch_request(protocol_id: int, remote: dict[str, Any], run: RunInfo) -> int | None:
    """Download the request file, hash it, seal it into staging and open its exchange.

    It is read into memory (the intake's size limit bounds it) and written only sealed with the
    staging key: what a municipality sends is not always encrypted.

    The remote file then moves from ``inbox/`` to ``received/`` so it is never taken again.
    Returns the exchange id, or ``None`` when the file is a duplicate of a request already
    processed (recorded in the audit as such; nothing else happens).
    """
    with session_scope() as session:
        protocol = get(session, protocol_id)
        already = session.query(Exchange).filter_by(protocol_id=protocol_id, run_id=run.run_id).one_or_none()
        if already is None or run.run_id is None:  # the ledger first: a request already taken needs no gate
            require_gate(protocol, run.exchange_date)
    if already is not None and run.run_id is not None:
        return _finish_fetch(protocol_id, already.id, already.request_name, run)  # a retry of this task

    hook = _hook(protocol)
    name = remote.get("name") or sftp.find_by_handle(hook, INBOX, remote["name_sha256"])
    if name is None:
        raise sftp.RemoteFileMissing(
            f"the request file the sensor found is no longer in {INBOX}/ on connection {protocol.channel_connection!r} "
            "(removed by the municipality?): clear wait_for_request to take the next one"
        )
    try:
        # The sensor judged the listed size; stat again here: a file over the limit is never downloaded.
        data, digest, size = sftp.fetch_bytes(
            hook, posixpath.join(INBOX, name), max_bytes=IntakeLimits.from_env().max_file_bytes
        )
    except sftp.RemoteFileTooLarge as err:
        raise InputError(f"{err}. The next run's wait_for_request quarantines it and reports to the municipality.") from None

    with session_scope() as session:
        protocol = get(session, protocol_id)
        exchange, duplicate_of = open_request_exchange(
            session, protocol, digest=digest, name=name, size=size, run=run, source=f"request file {sftp.shown(name)!r}"
        )
        if duplicate_of is None:
            Staging(protocol_id, exchange.id).write_request(data)
            audit.record(
                session, "request.fetched", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                data_categories=REQUEST_CATEGORIES, file_hashes={"request": digest}, counts={"bytes": size},
                message=f"request file {sftp.shown(name)!r} fetched from the municipality's inbox into staging "
                "(sealed with the staging key)",
                fact_key=f"exchange:{exchange.id}:fetched",
            )
    del data
    if duplicate_of is not None:
        target = sftp.move(hook, posixpath.join(INBOX, name), RECEIVED)
        with session_scope() as session:
            protocol = get(session, protocol_id)
            deadline, rule = ledger.request_deadline(protocol, run.exchange_date)
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=duplicate_of, kind="request_file", where="sftp",
                location=f"{protocol.channel_connection}:{target}", deadline=deadline, rule=rule, sha256=digest, size=size,
            )
        log.info("duplicate request: same content as exchange %s; moved to %s, not processed again", duplicate_of, sftp.shown(target))
        return None
    return _finish_fetch(protocol_id, exchange.id, name, run)


def _finish_fetch(protocol_id: int, exchange_id: int, name: str, run: RunInfo) -> int:
    """Move the request out of the inbox (once) and record its deletion deadlines."""
    key = f"exchange:{exchange_id}:received"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
    with ledger.side_effect(key, kind="received", exchange_id=exchange_id) as effect:
        if effect.pending:
            try:
                target = sftp.move(_hook(protocol), posixpath.join(INBOX, name), RECEIVED)
            except sftp.RemoteFileMissing:  # moved by an earlier try that crashed before recording it
                target = posixpath.join(RECEIVED, name)
            effect.complete(sha256=exchange.request_sha256, detail={"remote": target})
    target = effect.detail["remote"]
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        deadline, rule = ledger.request_deadline(protocol, exchange.exchange_date)
        staging = Staging(protocol.id, exchange.id)
        if not ledger.is_done(session, f"exchange:{exchange_id}:quarantined"):  # else the item followed the file
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange.id, kind="request_file", where="sftp",
                location=f"{protocol.channel_connection}:{target}", deadline=deadline, rule=rule,
                sha256=exchange.request_sha256, size=exchange.request_size,
            )
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange.id, kind="staging", where=staging.where,
            location=staging.location(), deadline=deadline, rule=rule,
        )
    return exchange_id


# ----------------------------------------------------------------------------- quarantine


def quarantine(exchange_id: int, err: IntakeError, run: RunInfo) -> None:
    """Move the request to ``quarantine/``, put a report in ``outbox/``, record it all (once each)."""
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        received = ledger.find_side_effect(session, f"exchange:{exchange_id}:received")
    hook = _hook(protocol)
    with ledger.side_effect(f"exchange:{exchange_id}:quarantined", kind="quarantined", exchange_id=exchange_id) as effect:
        if effect.pending:
            source = received.detail["remote"] if received and received.detail else posixpath.join(RECEIVED, exchange.request_name)
            try:
                target = sftp.move(hook, source, QUARANTINE)
            except sftp.RemoteFileMissing:
                target = posixpath.join(QUARANTINE, posixpath.basename(source))
            effect.complete(detail={"remote": target})
    report_name = validation_report_name(protocol, exchange)
    report_key = f"exchange:{exchange_id}:report"
    with ledger.side_effect(report_key, kind="report_delivered", exchange_id=exchange_id,
                            target=posixpath.join(OUTBOX, report_name)) as effect:
        if effect.pending:
            advice = inbox.advice_for_refusal(err.code)  # a file taken half-written: how to upload safely
            report = report_text(protocol, exchange, err) + "".join(f"\n{line}" for line in advice).encode("utf-8")
            digest, size = sftp.upload_bytes(hook, report + (b"\n" if advice else b""), OUTBOX, report_name)
            effect.complete(sha256=digest, detail={"bytes": size})
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        source = received.detail["remote"] if received and received.detail else None
        target = ledger.find_side_effect(session, f"exchange:{exchange_id}:quarantined").detail["remote"]
        report = ledger.find_side_effect(session, report_key)
        ledger.update_exchange(session, exchange, state="quarantined", failure_code=err.code)
        deadline, rule = ledger.request_deadline(protocol, exchange.exchange_date)
        conn = protocol.channel_connection
        moved = source is not None and ledger.move_copy(
            session, "request_file", f"{conn}:{source}", exchange_id=exchange_id, kind="quarantine",
            location=f"{conn}:{target}", deadline=deadline, rule=rule,
        )
        copies = [("report", posixpath.join(OUTBOX, report_name), report.sha256, (report.detail or {}).get("bytes"))]
        if not moved:
            copies.append(("quarantine", target, exchange.request_sha256, exchange.request_size))
        for kind, location, sha256, size in copies:
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange_id, kind=kind, where="sftp",
                location=f"{conn}:{location}", deadline=deadline, rule=rule, sha256=sha256, size=size,
            )
        audit.record(
            session, "request.quarantined", "refused", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            file_hashes={"request": exchange.request_sha256}, message=f"{err.code}: {err}",
            fact_key=f"exchange:{exchange_id}:quarantined",
        )


# ----------------------------------------------------------------------------- deliver


def deliver(exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Upload the result to ``outbox/`` (``.part`` then rename, verified) — exactly once.

    The caller (:func:`welfare_exchange.exchange.steps.deliver_result`) has just re-checked
    the protocol gate.
    """
    key = f"exchange:{exchange_id}:delivered"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        name = result_file_name(protocol, exchange)
    with ledger.side_effect(key, kind="delivered", exchange_id=exchange_id, target=posixpath.join(OUTBOX, name)) as effect:
        if effect.was_done:
            log.info("exchange %s was already delivered at %s; nothing sent again", exchange_id, effect.done_at)
            return {"name": name, "sha256": effect.sha256, "already_delivered": True}
        staged = Staging(protocol.id, exchange.id).read_file(RESULT_FILE)
        digest, size = sftp.upload_bytes(_hook(protocol), staged, OUTBOX, name)
        del staged
        if digest != exchange.result_sha256:
            raise RuntimeError(f"exchange {exchange_id}: the delivered file's hash differs from the built result; not recorded as delivered")
        _record_delivery(exchange_id, name, digest, size, run)  # completes it with the exchange's state and fact
        effect.complete(sha256=digest, detail={"bytes": size})
    return {"name": name, "sha256": digest, "already_delivered": False}


def confirm_delivery(exchange_id: int, run: RunInfo) -> bool:
    """Whether the result is delivered, asking the far side for a delivery begun but not recorded.

    An earlier try that uploaded the result and stopped before the ledger said so left the
    delivery ``pending``. When ``outbox/`` holds the built result whole, it was delivered: that
    is recorded now, without uploading — and before any gate is asked, since a protocol closed
    afterwards cannot undo it.
    """
    key = f"exchange:{exchange_id}:delivered"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        effect = ledger.find_side_effect(session, key)
        if effect is None or effect.state == "done":
            return effect is not None
        name = result_file_name(protocol, exchange)
    if exchange.result_sha256 is None or sftp.remote_sha256(_hook(protocol), posixpath.join(OUTBOX, name)) != exchange.result_sha256:
        return False
    staged = Staging(protocol.id, exchange.id)
    _record_delivery(exchange_id, name, exchange.result_sha256,
                     len(staged.read_file(RESULT_FILE)) if staged.has(RESULT_FILE) else None, run)
    return True


def _record_delivery(exchange_id: int, name: str, digest: str, size: int | None, run: RunInfo) -> None:
    """The delivery done, the exchange delivered and its audit fact: one transaction."""
    key = f"exchange:{exchange_id}:delivered"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        ledger.complete_side_effect(session, key, sha256=digest, detail={"bytes": size})
        ledger.update_exchange(session, exchange, state="delivered")
        audit.record(
            session, "result.delivered", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=RESULT_CATEGORIES, file_hashes={"result": digest}, counts={"bytes": size},
            message=f"encrypted result {sftp.shown(name)!r} delivered to the municipality's outbox over SFTP and verified",
            fact_key=key,
        )


# ----------------------------------------------------------------------------- retention


def validation_report_name(protocol: Protocol, exchange: Exchange) -> str:
    """E.g. ``groeipakket_validatierapport_44021_exchange-12.txt``: never the municipality's file
    name, which may hold personal data (the report carries the request's SHA-256 instead)."""
    return f"groeipakket_validatierapport_{protocol.nis_code}_exchange-{exchange.id}.txt"


def schedule_retention(session, protocol: Protocol, exchange: Exchange, result_deadline: dt.date, request_deadline: dt.date) -> None:
    """Record the deletion deadlines of what this exchange left on the SFTP server."""
    name = result_file_name(protocol, exchange)
    delivered = ledger.find_side_effect(session, f"exchange:{exchange.id}:delivered")
    ledger.schedule_deletion(
        session, protocol_id=protocol.id, exchange_id=exchange.id, kind="result_file", where="sftp",
        location=f"{protocol.channel_connection}:{posixpath.join(OUTBOX, name)}", deadline=result_deadline,
        rule=ledger.result_deadline(protocol, exchange.exchange_date)[1],
        sha256=exchange.result_sha256, size=((delivered.detail or {}).get("bytes") if delivered is not None else None),
    )
    if protocol.delete_request_after_match:  # "delete the request as soon as matching is done"
        received = ledger.find_side_effect(session, f"exchange:{exchange.id}:received")
        if received is not None and received.detail:
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange.id, kind="request_file", where="sftp",
                location=f"{protocol.channel_connection}:{received.detail['remote']}", deadline=request_deadline,
                rule=f"request: deleted as soon as matching is done (protocol {protocol.id})",
                sha256=exchange.request_sha256, size=exchange.request_size,
            )


# ----------------------------------------------------------------------------- the channel


def find_request(
    protocol_id: int, *, actor, on: dt.date, settle_seconds: float = 10.0, max_bytes: int | None = None,
    stale_after: float | None = None, previous: sftp.Look | None = None, directory: str = INBOX,
) -> dict[str, Any] | None:
    """One look at ``inbox/``: answer what is no request (quarantined, reported, once), return the
    oldest complete request's handle — never its name — or ``None``.

    A file is complete when its size and mtime did not change across two looks ``settle_seconds``
    apart (or since ``previous``, the trigger's last listing).
    """
    with session_scope() as session:
        protocol = get(session, protocol_id)
        conn_id = protocol.channel_connection
    hook = sftp.sftp_hook(conn_id)
    max_bytes = IntakeLimits.from_env().max_file_bytes if max_bytes is None else int(max_bytes)
    stale_after = inbox.stale_upload_seconds() if stale_after is None else float(stale_after)
    survey = sftp.survey_inbox(hook, directory, sftp.DEFAULT_REQUEST_PATTERNS, settle_seconds, max_bytes=max_bytes,
                               stale_after=stale_after, previous=previous)
    if survey.unanswered:
        answered = inbox.answer(protocol_id, survey, hook, actor=actor, on=on, max_bytes=max_bytes, stale_after=stale_after)
        log.info("%d file(s) in %s that are no request to take were quarantined and reported", answered, directory)
    if not survey.ready:
        return None
    first = survey.ready[0]
    log.info("request file %s is complete (%d bytes); %d more waiting", sftp.shown(first.name), first.size, len(survey.ready) - 1)
    # XCom never carries the file name (a municipality may put a number in it): a handle.
    return {"name_sha256": sftp.name_handle(first.name), "size": first.size, "mtime": first.mtime, "directory": directory}


def send_file(
    protocol: Protocol, *, key: str, kind: str, exchange_id: int | None, name: str, payload: bytes, subject: str,
    content_type: str, actor, attempt: str, today: dt.date, sensitive: bool = True, reference: str | None = None,
) -> Sent:
    """Put ``payload`` in ``outbox/`` as ``name`` (``.part``, rename, verified) — once per ``key``."""
    del subject, content_type, actor, attempt, today, sensitive, reference  # a file in the outbox has no envelope; it is sealed already
    target = posixpath.join(OUTBOX, name)
    location = f"{protocol.channel_connection}:{target}"
    with ledger.side_effect(key, kind=kind, exchange_id=exchange_id, target=target) as effect:
        if effect.pending:
            digest, size = sftp.upload_bytes(_hook(protocol), payload, OUTBOX, name)
            effect.complete(sha256=digest, detail={"bytes": size, "location": location})
    return Sent(sha256=effect.sha256, size=(effect.detail or {}).get("bytes", len(payload)),
                how="to the municipality's outbox over SFTP and verified",
                location=(effect.detail or {}).get("location", location), already_sent=effect.was_done, detail=effect.detail)


def deleter(store: str, *, hook_factory=sftp.sftp_hook, **_: Any) -> Deleter:
    """Deletes an item's file on one SFTP account (``store``: its connection id), after checking its SHA-256."""
    hook = hook_factory(store)

    def delete(item, before_delete: Callable[[str], None]) -> str | None:
        if item.sha256 is None:
            return None
        _, path = split_location(item.location)
        return sftp.delete_verified(hook, path, sha256=item.sha256, size=item.size, before_delete=before_delete)

    return delete


def split_location(location: str) -> tuple[str, str]:
    """``"<conn id>:<remote path>"`` → ``(conn id, remote path)``."""
    conn_id, sep, path = location.partition(":")
    if not sep or not conn_id or not path:
        raise ValueError("an SFTP retention location must be '<connection id>:<remote path>'")
    return conn_id, path


# ----------------------------------------------------------------------------- other files in


def find_inbound(protocol: Protocol, patterns: tuple[str, ...], *, settle_seconds: float = 2.0) -> str | None:
    """The handle of the oldest complete file in ``inbox/`` matching ``patterns`` (never its name), or ``None``."""
    ready = sftp.list_ready_requests(_hook(protocol), INBOX, patterns, settle_seconds)
    return sftp.name_handle(ready[0].name) if ready else None


def _inbound(protocol: Protocol, remote: str, data: bytes) -> Inbound:
    return Inbound(data=data, ref=remote, location=f"{protocol.channel_connection}:{remote}",
                   sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def take_inbound(protocol: Protocol, handle: str, *, key: str) -> Inbound:
    """Move the file from ``inbox/`` to ``received/`` (once per ``key``) and read it (into memory only;
    its name is the municipality's and is never recorded)."""
    hook = _hook(protocol)
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        target = (effect.detail or {}).get("remote") if effect is not None and effect.state == "done" else None
    if target is None:
        name = sftp.find_by_handle(hook, INBOX, handle)
        if name is None and effect is not None:  # moved by an earlier try that stopped before recording it
            moved = sftp.find_by_handle(hook, RECEIVED, handle)
            if moved is not None:
                target = posixpath.join(RECEIVED, moved)
                with session_scope() as session:
                    ledger.complete_side_effect(session, key, detail={"remote": target})
    if target is None:
        if name is None:
            raise sftp.RemoteFileMissing(
                f"the file the sensor found is no longer in {INBOX}/ on connection {protocol.channel_connection!r}: "
                "clear the waiting task to take the next one"
            )
        with session_scope() as session:
            ledger.begin_side_effect(session, key, kind="referral_feedback_received", exchange_id=None)
        target = sftp.move(hook, posixpath.join(INBOX, name), RECEIVED)
        with session_scope() as session:
            ledger.complete_side_effect(session, key, detail={"remote": target})
    data, _, _ = sftp.fetch_bytes(hook, target, max_bytes=IntakeLimits.from_env().max_file_bytes)
    return _inbound(protocol, target, data)


def quarantine_inbound(protocol: Protocol, inbound: Inbound, *, key: str) -> Inbound:
    """Move a refused file from ``received/`` to ``quarantine/`` (once per ``key``)."""
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        if effect is not None and effect.state == "done":
            return _inbound(protocol, effect.detail["remote"], inbound.data)
        ledger.begin_side_effect(session, key, kind="referral_feedback_quarantined", exchange_id=None)
    try:
        target = sftp.move(_hook(protocol), inbound.ref, QUARANTINE)
    except sftp.RemoteFileMissing:  # moved by an earlier try that stopped before recording it
        target = posixpath.join(QUARANTINE, posixpath.basename(inbound.ref))
    with session_scope() as session:
        ledger.complete_side_effect(session, key, detail={"remote": target})
    return _inbound(protocol, target, inbound.data)


class SftpChannel(Channel):
    """The municipality's chrooted SFTP folders."""

    name = "sftp"
    places = ("sftp",)
    sensor = "sftp_inbox"
    refusal_hint = REFUSAL_HINT
    unreachable = (sftp.SftpTransportError,)

    def find_request(self, protocol_id, *, actor, on, **options):
        return find_request(protocol_id, actor=actor, on=on, **options)

    def doc(self, entry):
        return {
            "how_sent": "into its SFTP `inbox/`",
            "wait": "takes only complete files (no `.part`, size stable across two looks), oldest first",
            "fetch": "downloads the file, SHA-256, seals it into staging with the staging key, ledger entry; a file already "
            "processed is a *duplicate* and skipped",
            "refuse": "a bad file goes to `quarantine/` with a report in `outbox/`",
            "deliver": "`.part` upload, rename, verified; the ledger makes it happen once",
            "connections": f"Channel connection: `{entry['channel_connection']}` · key connection: `{entry['key_connection']}` "
            "(its password is the file password).",
        }

    def fetch_request(self, protocol_id, item, run):
        return fetch_request(protocol_id, item, run)

    def find_inbound(self, protocol, patterns, *, settle_seconds=2.0):
        return find_inbound(protocol, patterns, settle_seconds=settle_seconds)

    def take_inbound(self, protocol, handle, patterns, *, key, run):
        del patterns, run  # the sensor matched the name already
        return take_inbound(protocol, handle, key=key)

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

    def sent_location(self, protocol, name):
        return f"{protocol.channel_connection}:{posixpath.join(OUTBOX, name)}"

    def shown_location(self, location):
        conn_id, _, path = location.partition(":")
        return f"{conn_id}:{untrusted.shown_path(path)}"

    def store_of(self, location):
        return split_location(location)[0]

    def deleter(self, store, **options):
        return deleter(store, **options)


CHANNEL = SftpChannel()
