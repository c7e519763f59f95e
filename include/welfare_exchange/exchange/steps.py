"""The steps of a Method 1 exchange, each a plain function the DAG's tasks call.

Method 1: the municipality sends a password-encrypted Excel file with the INSZ numbers of the
children (0–25) domiciled in it; the agency returns, encrypted, which of them gave right to a
*sociale toeslag* (the social supplement, the child-poverty criterion) from the reference date
on, and who their *begunstigde* (beneficiary, the parent who is paid) is.

Every step is idempotent — the ledger says what was already done, audit facts carry a
``fact_key`` — and writes its audit record (hashes, counts, keyed subject references; never an
INSZ). Steps raise :class:`~welfare_exchange.errors.InputError` or
:class:`~welfare_exchange.errors.ProtocolError` for what no retry can fix (the DAG fails the task
at once) and let transport and database errors through (the DAG retries those with backoff).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import pathlib
import posixpath
from typing import Any

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.exchange import matching, result
from welfare_exchange.exchange.context import RunInfo
from welfare_exchange.intake import IntakeError, IntakeLimits, read_request
from welfare_exchange.intake import encrypt_agile
from welfare_exchange.protocols import check_gate, get
from welfare_exchange.staging import Staging, atomic_write
from welfare_exchange.transport import sftp

log = logging.getLogger(__name__)

INBOX, OUTBOX, RECEIVED, QUARANTINE = "inbox", "outbox", "received", "quarantine"
REQUEST_CATEGORIES = ["INSZ kind"]
RESULT_CATEGORIES = ["INSZ kind", "INSZ begunstigde", "recht op sociale toeslag", "periode"]


class ExchangeRefused(InputError):
    """The request cannot be processed (quarantined; the municipality got a report)."""


def key_password(protocol: Protocol) -> str:
    """The file password agreed between the two DPOs: the password of the protocol's key connection."""
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(protocol.key_connection)
    except Exception as exc:  # AirflowNotFoundException and friends: say what to configure
        raise ProtocolError(
            f"the key connection {protocol.key_connection!r} of protocol {protocol.id} cannot be read "
            f"({type(exc).__name__}): create it in Airflow (Admin > Connections) or as "
            f"AIRFLOW_CONN_{protocol.key_connection.upper()}, with the agreed file password as its password"
        ) from None
    if not connection.password:
        raise ProtocolError(f"the key connection {protocol.key_connection!r} of protocol {protocol.id} has no password")
    return connection.password


def require_gate(protocol: Protocol, on: dt.date) -> None:
    """Raise :class:`ProtocolError` unless the protocol allows this exchange on ``on``."""
    decision = check_gate(protocol, on, kind="method1", channel=protocol.channel)
    if not decision.is_open:
        raise ProtocolError(f"protocol gate {decision.state}: {decision.reason}")


def _hook(protocol: Protocol):
    return sftp.sftp_hook(protocol.channel_connection)


def _exchange(session, exchange_id: int) -> tuple[Exchange, Protocol]:
    exchange = ledger.get_exchange(session, exchange_id)
    return exchange, get(session, exchange.protocol_id)


# ----------------------------------------------------------------------------- 3. fetch


def fetch_request(protocol_id: int, remote: dict[str, Any], run: RunInfo) -> int | None:
    """Stream the request file to staging (still encrypted), hash it and open its exchange.

    The remote file then moves from ``inbox/`` to ``received/`` so it is never taken again.
    Returns the exchange id, or ``None`` when the file is a duplicate of a request already
    processed (recorded in the audit as such; nothing else happens).
    """
    name = remote["name"]
    with session_scope() as session:
        protocol = get(session, protocol_id)
        require_gate(protocol, run.exchange_date)
        already = session.query(Exchange).filter_by(protocol_id=protocol_id, run_id=run.run_id).one_or_none()
    if already is not None and run.run_id is not None:
        return _finish_fetch(protocol_id, already.id, name, run)  # a retry of this task

    incoming = Staging(protocol_id, 0).folder.parent / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    local = incoming / f"{hashlib.sha256((run.run_id or name).encode()).hexdigest()[:16]}.request"
    hook = _hook(protocol)
    digest, size = sftp.fetch(hook, posixpath.join(INBOX, name), local)

    with session_scope() as session:
        protocol = get(session, protocol_id)
        exchange, is_new = ledger.open_exchange(
            session, protocol, request_sha256=digest, request_name=name, request_size=size,
            dag_id=run.dag_id, run_id=run.run_id, exchange_date=run.exchange_date,
        )  # fmt: skip
        if not is_new and exchange.run_id != run.run_id:
            audit.record(
                session, "request.duplicate", "duplicate", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                file_hashes={"request": digest}, counts={"bytes": size},
                message=f"request file {name!r} has the same SHA-256 as exchange {exchange.id} "
                f"(run {exchange.run_id}); it is not processed again",
                fact_key=f"duplicate:{protocol.id}:{digest}:{run.run_id}",
            )  # fmt: skip
            duplicate_of = exchange.id
        else:
            duplicate_of = None
            staging = Staging(protocol_id, exchange.id)
            staging.folder.mkdir(parents=True, exist_ok=True)
            os.replace(local, staging.path("request.enc"))
            audit.record(
                session, "request.fetched", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
                data_categories=REQUEST_CATEGORIES, file_hashes={"request": digest}, counts={"bytes": size},
                message=f"request file {name!r} fetched from the municipality's inbox into staging (still encrypted)",
                fact_key=f"exchange:{exchange.id}:fetched",
            )  # fmt: skip
    if duplicate_of is not None:
        local.unlink(missing_ok=True)
        target = sftp.move(hook, posixpath.join(INBOX, name), RECEIVED)
        log.info("duplicate request: same content as exchange %s; moved to %s, not processed again", duplicate_of, target)
        return None
    return _finish_fetch(protocol_id, exchange.id, name, run)


def _finish_fetch(protocol_id: int, exchange_id: int, name: str, run: RunInfo) -> int:
    """Move the request out of the inbox (once) and record its deletion deadlines."""
    key = f"exchange:{exchange_id}:received"
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
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
        exchange, protocol = _exchange(session, exchange_id)
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
            )  # fmt: skip
    return exchange_id


# ------------------------------------------------------------------ 4. decrypt and validate


def decrypt_and_validate(exchange_id: int, run: RunInfo, *, limits: IntakeLimits | None = None) -> dict[str, Any]:
    """Decrypt the request in memory, validate it, and stage the valid set (encrypted).

    A file that cannot be processed is quarantined on the SFTP server, a validation report
    goes to the municipality's outbox, and :class:`ExchangeRefused` says why.
    """
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        require_gate(protocol, exchange.exchange_date)
    staging = Staging(protocol.id, exchange.id)
    data = staging.path("request.enc").read_bytes()
    try:
        outcome = read_request(
            data, key_password(protocol), as_of=exchange.exchange_date,
            age_window=(protocol.age_min, protocol.age_max), limits=limits or IntakeLimits.from_env(),
        )  # fmt: skip
    except IntakeError as err:
        quarantine(exchange_id, err, run)
        raise ExchangeRefused(
            f"exchange {exchange_id} ({protocol.municipality}): the request file cannot be processed: {err} "
            f"It was moved to quarantine/ and a validation report was put in the municipality's outbox/. "
            f"Runbook: 'A request was refused'."
        ) from None
    summary = outcome.report.summary()
    staging.write_encrypted("valid", "\n".join(outcome.valid).encode("ascii"))
    staging.write_encrypted(
        "report", json.dumps({"summary": summary, "rows": [list(r) for r in outcome.report.to_rows()]}).encode()
    )
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        ledger.update_exchange(session, exchange, state="validated", counts={k: summary[k] for k in ("rows", "valid", "duplicates")})
        audit.record(
            session, "request.validated", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=REQUEST_CATEGORIES, file_hashes={"request": exchange.request_sha256},
            counts={"rows": summary["rows"], "valid": summary["valid"], "duplicates": summary["duplicates"],
                    "invalid": sum(summary["invalid"].values())},
            subjects=outcome.valid,
            message=f"request decrypted in memory ({summary['encryption']}) and validated",
            fact_key=f"exchange:{exchange_id}:validated",
        )  # fmt: skip
    return summary


def _report_text(protocol: Protocol, exchange: Exchange, err: IntakeError) -> bytes:
    lines = [
        "Groeipakket - validatierapport / validation report",
        "",
        f"Lokaal bestuur / local authority: {protocol.municipality} (NIS {protocol.nis_code})",
        f"Protocol: {protocol.id}",
        f"Uitwisseling / exchange: {exchange.id}",
        f"Bestand / file: {exchange.request_name}",
        f"SHA-256: {exchange.request_sha256}",
        f"Datum / date: {exchange.exchange_date.isoformat()}",
        "",
        "Het bestand kon niet verwerkt worden / the file could not be processed:",
        f"  reden / reason: {err.code}",
        f"  {err}",
        "",
        "Het bestand werd in quarantaine geplaatst en wordt niet verwerkt. Corrigeer het en stuur het opnieuw.",
        "The file was quarantined and will not be processed. Correct it and send it again.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def quarantine(exchange_id: int, err: IntakeError, run: RunInfo) -> None:
    """Move the request to ``quarantine/``, put a report in ``outbox/``, record it all (once each)."""
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
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
                                     target=posixpath.join(OUTBOX, report_name))  # fmt: skip
    if not report_done:
        digest, _ = sftp.upload_bytes(hook, _report_text(protocol, exchange, err), OUTBOX, report_name)
        with session_scope() as session:
            ledger.complete_side_effect(session, report_key, sha256=digest)
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        target = ledger.find_side_effect(session, f"exchange:{exchange_id}:quarantined").detail["remote"]
        ledger.update_exchange(session, exchange, state="quarantined", failure_code=err.code)
        deadline = exchange.exchange_date + dt.timedelta(days=protocol.request_retention_days)
        for kind, location in (("quarantine", target), ("report", posixpath.join(OUTBOX, report_name))):
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange_id, kind=kind, where="sftp",
                location=f"{protocol.channel_connection}:{location}", deadline=deadline,
                rule=f"request: {protocol.request_retention_days} days after receipt (protocol {protocol.id})",
            )  # fmt: skip
        audit.record(
            session, "request.quarantined", "refused", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            file_hashes={"request": exchange.request_sha256}, message=f"{err.code}: {err}",
            fact_key=f"exchange:{exchange_id}:quarantined",
        )  # fmt: skip


# ----------------------------------------------------------------------------- 5. match


def match_entitlements(exchange_id: int, run: RunInfo) -> dict[str, int]:
    """Set-join the valid numbers against the entitlement store; stage the rows (encrypted)."""
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        require_gate(protocol, exchange.exchange_date)
    staging = Staging(protocol.id, exchange.id)
    numbers = staging.read_encrypted("valid").decode("ascii").split()
    with session_scope() as session:
        rows = matching.match(
            session, numbers, supplements=protocol.supplements, reference_date=protocol.reference_date,
            exchange_date=exchange.exchange_date,
        )  # fmt: skip
    staging.write_encrypted("matched", matching.serialise(rows))
    counts = {
        "matched_rows": len(rows),
        "matched_children": len({r.child_insz for r in rows}),
        "beneficiaries": len({r.beneficiary_insz for r in rows}),
    }
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        ledger.update_exchange(session, exchange, state="matched", counts=counts)
        audit.record(
            session, "entitlements.matched", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=RESULT_CATEGORIES, counts=counts,
            subjects={r.child_insz for r in rows} | {r.beneficiary_insz for r in rows},
            message=f"matched against the entitlement store: {', '.join(protocol.supplements)} "
            f"between {protocol.reference_date.isoformat()} and {exchange.exchange_date.isoformat()}",
            fact_key=f"exchange:{exchange_id}:matched",
        )  # fmt: skip
    return counts


# ----------------------------------------------------------------------------- 6. build


def result_deadline(protocol: Protocol, exchange: Exchange) -> dt.date:
    return exchange.exchange_date + dt.timedelta(days=protocol.result_retention_days)


def build_result(exchange_id: int, run: RunInfo, *, out: os.PathLike | str | None = None) -> dict[str, Any]:
    """Build the result workbook and encrypt it with the protocol's key (Agile, AES-256).

    Built once: when the staged result exists and matches the ledger's hash, it is reused, so a
    re-run delivers exactly the same bytes. ``out`` also writes a copy there (the CLI dry run).
    """
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
    staging = Staging(protocol.id, exchange.id)
    target = staging.path("result.xlsx")
    if exchange.result_sha256 and target.exists() and _sha256(target) == exchange.result_sha256:
        log.info("result of exchange %s already built; reused", exchange_id)
    else:
        rows = matching.deserialise(staging.read_encrypted("matched"))
        report = json.loads(staging.read_encrypted("report"))
        plain = result.build_workbook(protocol, exchange, rows, report["rows"], report["summary"], result_deadline(protocol, exchange))
        atomic_write(target, encrypt_agile(plain, key_password(protocol)))
        del plain
        with session_scope() as session:
            exchange, protocol = _exchange(session, exchange_id)
            ledger.update_exchange(session, exchange, state="built", result_sha256=_sha256(target))
            audit.record(
                session, "result.built", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                data_categories=[c for c in RESULT_CATEGORIES], file_hashes={"result": exchange.result_sha256},
                counts={"rows": len(rows)}, message="result workbook built and encrypted with the protocol's key (AES-256)",
                fact_key=f"exchange:{exchange_id}:built",
            )  # fmt: skip
    if out is not None:
        atomic_write(pathlib.Path(out), target.read_bytes())
    return {"result_sha256": exchange.result_sha256 or _sha256(target), "name": result.result_file_name(protocol, exchange)}


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- 7. deliver


def recheck_gate(exchange_id: int, run: RunInfo) -> str:
    """The protocol gate once more, right before anything leaves the agency."""
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        decision = check_gate(protocol, exchange.exchange_date, kind="method1", channel=protocol.channel)
        if not decision.is_open:
            ledger.update_exchange(session, exchange, state="failed", failure_code="protocol_closed")
            audit.record(
                session, "result.delivery_blocked", "refused", actor=run.actor, protocol=protocol,
                exchange_id=exchange_id, message=decision.reason, fact_key=f"exchange:{exchange_id}:blocked",
            )  # fmt: skip
    if not decision.is_open:
        raise ProtocolError(f"delivery of exchange {exchange_id} blocked: {decision.reason}. Nothing was sent.")
    return decision.reason


def deliver_result(exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Upload the result to ``outbox/`` (``.part`` then rename, verified) — exactly once."""
    recheck_gate(exchange_id, run)
    key = f"exchange:{exchange_id}:delivered"
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
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
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        ledger.complete_side_effect(session, key, sha256=digest, detail={"bytes": size})
        ledger.update_exchange(session, exchange, state="delivered")
        audit.record(
            session, "result.delivered", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            data_categories=RESULT_CATEGORIES, file_hashes={"result": digest}, counts={"bytes": size},
            message=f"encrypted result {name!r} delivered to the municipality's outbox over SFTP and verified",
            fact_key=key,
        )  # fmt: skip
    return {"name": name, "sha256": digest, "already_delivered": False}


# ----------------------------------------------------------------------------- 8. retention


def record_retention(exchange_id: int, run: RunInfo) -> dict[str, str]:
    """Record the result's deletion deadlines; drop the run's intermediates now."""
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
    staging = Staging(protocol.id, exchange.id)
    removed = [name for name in ("valid", "matched", "report") if staging.remove(name)]
    name = result.result_file_name(protocol, exchange)
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        result_deadline_ = result_deadline(protocol, exchange)
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange_id, kind="result_file", where="sftp",
            location=f"{protocol.channel_connection}:{posixpath.join(OUTBOX, name)}", deadline=result_deadline_,
            rule=f"result: {protocol.result_retention_days} days after the exchange (protocol {protocol.id})",
            sha256=exchange.result_sha256,
        )  # fmt: skip
        request_deadline = (
            exchange.exchange_date
            if protocol.delete_request_after_match
            else exchange.exchange_date + dt.timedelta(days=protocol.request_retention_days)
        )
        if protocol.delete_request_after_match:  # "delete the request as soon as matching is done"
            received = ledger.find_side_effect(session, f"exchange:{exchange_id}:received")
            if received is not None and received.detail:
                ledger.schedule_deletion(
                    session, protocol_id=protocol.id, exchange_id=exchange_id, kind="request_file", where="sftp",
                    location=f"{protocol.channel_connection}:{received.detail['remote']}", deadline=request_deadline,
                    rule=f"request: deleted as soon as matching is done (protocol {protocol.id})",
                )  # fmt: skip
        staging_deadline = max(request_deadline, result_deadline_)
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange_id, kind="staging", where="local",
            location=str(staging.folder), deadline=staging_deadline,
            rule="staging: kept until the request and result deadlines have both passed",
        )  # fmt: skip
        audit.record(
            session, "retention.scheduled", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            counts={"intermediates_deleted": len(removed)},
            message=f"request to be deleted by {request_deadline.isoformat()}, result by {result_deadline_.isoformat()}",
            fact_key=f"exchange:{exchange_id}:retention",
        )  # fmt: skip
    return {"request_deadline": request_deadline.isoformat(), "result_deadline": result_deadline_.isoformat()}
