"""The SFTP channel of Method 1: the municipality's chrooted ``inbox/`` and ``outbox/``.

A request is taken from ``inbox/`` (streamed to staging, still encrypted) and moved to
``received/``; a refused one moves on to ``quarantine/`` with a validation report in
``outbox/``; the result is uploaded to ``outbox/`` as ``.part``, renamed and verified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import posixpath
from typing import Any

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.exchange import result
from welfare_exchange.exchange.common import (
    REQUEST_CATEGORIES,
    RESULT_CATEGORIES,
    load_exchange,
    open_request_exchange,
    report_text,
    require_gate,
)
from welfare_exchange.exchange.context import RunInfo
from welfare_exchange.errors import InputError
from welfare_exchange.exchange import inbox
from welfare_exchange.intake import IntakeError, IntakeLimits
from welfare_exchange.protocols import get
from welfare_exchange.staging import Staging
from welfare_exchange.transport import sftp

log = logging.getLogger(__name__)

INBOX, OUTBOX, RECEIVED, QUARANTINE = "inbox", "outbox", "received", "quarantine"

#: Where an operator finds a refused request and what the municipality got.
REFUSAL_HINT = "It was moved to quarantine/ and a validation report was put in the municipality's outbox/."


def _hook(protocol: Protocol):
    return sftp.sftp_hook(protocol.channel_connection)


# ----------------------------------------------------------------------------- receive


def fetch_request(protocol_id: int, remote: dict[str, Any], run: RunInfo) -> int | None:
    """Stream the request file to staging (still encrypted), hash it and open its exchange.

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
    incoming = Staging(protocol_id, 0).folder.parent / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    local = incoming / f"{hashlib.sha256((run.run_id or name).encode()).hexdigest()[:16]}.request"
    try:
        # The sensor judged the listed size; stat again here: a file over the limit is never downloaded.
        digest, size = sftp.fetch(hook, posixpath.join(INBOX, name), local, max_bytes=IntakeLimits.from_env().max_file_bytes)
    except sftp.RemoteFileTooLarge as err:
        raise InputError(f"{err}. The next run's wait_for_request quarantines it and reports to the municipality.") from None

    with session_scope() as session:
        protocol = get(session, protocol_id)
        exchange, duplicate_of = open_request_exchange(
            session, protocol, digest=digest, name=name, size=size, run=run, source=f"request file {sftp.shown(name)!r}"
        )
        if duplicate_of is None:
            staging = Staging(protocol_id, exchange.id)
            staging.folder.mkdir(parents=True, exist_ok=True)
            os.replace(local, staging.path("request.enc"))
            audit.record(
                session, "request.fetched", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                data_categories=REQUEST_CATEGORIES, file_hashes={"request": digest}, counts={"bytes": size},
                message=f"request file {sftp.shown(name)!r} fetched from the municipality's inbox into staging (still encrypted)",
                fact_key=f"exchange:{exchange.id}:fetched",
            )
    if duplicate_of is not None:
        local.unlink(missing_ok=True)
        target = sftp.move(hook, posixpath.join(INBOX, name), RECEIVED)
        log.info("duplicate request: same content as exchange %s; moved to %s, not processed again", duplicate_of, sftp.shown(target))
        return None
    return _finish_fetch(protocol_id, exchange.id, name, run)


def _finish_fetch(protocol_id: int, exchange_id: int, name: str, run: RunInfo) -> int:
    """Move the request out of the inbox (once) and record its deletion deadlines."""
    key = f"exchange:{exchange_id}:received"
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        done = ledger.is_done(session, key)
        hook = _hook(protocol)
    if not done:
        with session_scope() as session:
            ledger.begin_side_effect(session, key, kind="received", exchange_id=exchange_id)
        try:
            target = sftp.move(hook, posixpath.join(INBOX, name), RECEIVED)
        except sftp.RemoteFileMissing:  # moved by an earlier try that crashed before recording it
            target = posixpath.join(RECEIVED, name)
        with session_scope() as session:
            ledger.complete_side_effect(session, key, sha256=exchange.request_sha256, detail={"remote": target})
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        target = ledger.find_side_effect(session, key).detail["remote"]
        deadline = exchange.exchange_date + dt.timedelta(days=protocol.request_retention_days)
        rule = f"request: {protocol.request_retention_days} days after receipt (protocol {protocol.id})"
        for where, location, kind in (
            ("sftp", target, "request_file"),
            ("local", str(Staging(protocol.id, exchange.id).folder), "staging"),
        ):
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange.id, kind=kind, where=where,
                location=f"{protocol.channel_connection}:{location}" if where == "sftp" else location,
                deadline=deadline, rule=rule, sha256=exchange.request_sha256,
            )
    return exchange_id


# ----------------------------------------------------------------------------- quarantine


def quarantine(exchange_id: int, err: IntakeError, run: RunInfo) -> None:
    """Move the request to ``quarantine/``, put a report in ``outbox/``, record it all (once each)."""
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        received = ledger.find_side_effect(session, f"exchange:{exchange_id}:received")
        moved = ledger.find_side_effect(session, f"exchange:{exchange_id}:quarantined")
    hook = _hook(protocol)
    if moved is None or moved.state != "done":
        source = received.detail["remote"] if received and received.detail else posixpath.join(RECEIVED, exchange.request_name)
        with session_scope() as session:
            ledger.begin_side_effect(session, f"exchange:{exchange_id}:quarantined", kind="quarantined", exchange_id=exchange_id)
        try:
            target = sftp.move(hook, source, QUARANTINE)
        except sftp.RemoteFileMissing:
            target = posixpath.join(QUARANTINE, posixpath.basename(source))
        with session_scope() as session:
            ledger.complete_side_effect(session, f"exchange:{exchange_id}:quarantined", detail={"remote": target})
    report_name = f"{posixpath.splitext(exchange.request_name or 'aanvraag')[0]}.validatierapport-exchange-{exchange_id}.txt"
    report_key = f"exchange:{exchange_id}:report"
    with session_scope() as session:
        report_done = ledger.is_done(session, report_key)
        if not report_done:
            ledger.begin_side_effect(session, report_key, kind="report_delivered", exchange_id=exchange_id,
                                     target=posixpath.join(OUTBOX, report_name))
    if not report_done:
        advice = inbox.advice_for_refusal(err.code)  # a file taken half-written: how to upload safely
        report = report_text(protocol, exchange, err) + "".join(f"\n{line}" for line in advice).encode("utf-8")
        digest, _ = sftp.upload_bytes(hook, report + (b"\n" if advice else b""), OUTBOX, report_name)
        with session_scope() as session:
            ledger.complete_side_effect(session, report_key, sha256=digest)
    with session_scope() as session:
        exchange, protocol = load_exchange(session, exchange_id)
        target = ledger.find_side_effect(session, f"exchange:{exchange_id}:quarantined").detail["remote"]
        ledger.update_exchange(session, exchange, state="quarantined", failure_code=err.code)
        deadline = exchange.exchange_date + dt.timedelta(days=protocol.request_retention_days)
        for kind, location in (("quarantine", target), ("report", posixpath.join(OUTBOX, report_name))):
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange_id, kind=kind, where="sftp",
                location=f"{protocol.channel_connection}:{location}", deadline=deadline,
                rule=f"request: {protocol.request_retention_days} days after receipt (protocol {protocol.id})",
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
        name = result.result_file_name(protocol, exchange)
        effect = ledger.find_side_effect(session, key)
        if effect is not None and effect.state == "done":
            log.info("exchange %s was already delivered at %s; nothing sent again", exchange_id, effect.done_at)
            return {"name": name, "sha256": effect.sha256, "already_delivered": True}
        ledger.begin_side_effect(session, key, kind="delivered", exchange_id=exchange_id, target=posixpath.join(OUTBOX, name))
    staged = Staging(protocol.id, exchange.id).path("result.xlsx")
    digest, size = sftp.deliver(_hook(protocol), staged, OUTBOX, name)
    if digest != exchange.result_sha256:
        raise RuntimeError(f"exchange {exchange_id}: the delivered file's hash differs from the built result; not recorded as delivered")
    _record_delivery(exchange_id, name, digest, size, run)
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
        name = result.result_file_name(protocol, exchange)
    if exchange.result_sha256 is None or sftp.remote_sha256(_hook(protocol), posixpath.join(OUTBOX, name)) != exchange.result_sha256:
        return False
    staged = Staging(protocol.id, exchange.id).path("result.xlsx")
    _record_delivery(exchange_id, name, exchange.result_sha256, staged.stat().st_size if staged.exists() else None, run)
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


def schedule_retention(session, protocol: Protocol, exchange: Exchange, result_deadline: dt.date, request_deadline: dt.date) -> None:
    """Record the deletion deadlines of what this exchange left on the SFTP server."""
    name = result.result_file_name(protocol, exchange)
    ledger.schedule_deletion(
        session, protocol_id=protocol.id, exchange_id=exchange.id, kind="result_file", where="sftp",
        location=f"{protocol.channel_connection}:{posixpath.join(OUTBOX, name)}", deadline=result_deadline,
        rule=f"result: {protocol.result_retention_days} days after the exchange (protocol {protocol.id})",
        sha256=exchange.result_sha256,
    )
    if protocol.delete_request_after_match:  # "delete the request as soon as matching is done"
        received = ledger.find_side_effect(session, f"exchange:{exchange.id}:received")
        if received is not None and received.detail:
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange.id, kind="request_file", where="sftp",
                location=f"{protocol.channel_connection}:{received.detail['remote']}", deadline=request_deadline,
                rule=f"request: deleted as soon as matching is done (protocol {protocol.id})",
            )
