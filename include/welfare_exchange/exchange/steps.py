"""The steps of a Method 1 exchange, each a plain function the DAG's tasks call.

Method 1: the municipality sends a password-encrypted Excel file with the INSZ numbers of the
children (0–25) domiciled in it; the agency returns, encrypted, which of them gave right to a
*sociale toeslag* (the social supplement, the child-poverty criterion) from the reference date
on, and who their *begunstigde* (beneficiary, the parent who is paid) is.

Every step is idempotent — the ledger says what was already done, audit facts carry a
``fact_key`` — and writes its audit record (hashes, counts, keyed subject references; never an
INSZ). A step whose work is already done (the result delivered, the request quarantined)
answers from the ledger before it asks the protocol gate, and an exchange's state only moves
forward (:mod:`welfare_exchange.exchange_state`). Steps raise
:class:`~welfare_exchange.errors.InputError` or :class:`~welfare_exchange.errors.ProtocolError`
for what no retry can fix (the DAG fails the task at once) and let transport and database
errors through (the DAG retries those with backoff).

The steps do not care how the request came in or how the result leaves: receiving,
quarantining, delivering and the channel's own retention are the protocol's channel's
(:class:`welfare_exchange.channels.base.Channel`, found by
:func:`welfare_exchange.channels.registry.channel_for`). Decrypting, validating, matching, building and recording retention are the same
for every channel.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import os
import pathlib
from typing import Any

from welfare_exchange import audit, failures, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.entitlements import history
from welfare_exchange.exchange import matching, result
from welfare_exchange.channels.registry import channel_for
from welfare_exchange.channels.common import (  # noqa: F401 (re-exported: the steps' public names)
    result_file_name,
    REQUEST_CATEGORIES,
    RESULT_CATEGORIES,
    ExchangeRefused,
    delivered,
    key_password,
    load_exchange,
    request_deadline,
    require_gate,
    result_deadline,
    sha256_file,
)
from welfare_exchange.errors import AgencySideError, ProtocolError
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.intake import IntakeError, IntakeLimits, encrypt_agile, read_request
from welfare_exchange.protocols import check_gate, get
from welfare_exchange.retention.rules import RULE_AFTER_MATCH
from welfare_exchange.staging import RESULT_FILE, RUNBOOK_SECTION, Staging, StagedFileMissing, atomic_write

log = logging.getLogger(__name__)

_exchange = load_exchange
_sha256 = sha256_file
#: The retention kinds of the request's copies: received/ on SFTP, the message in the agency's
#: mailbox, the staged file.
REQUEST_COPIES = ("request_file", "request_message")


def _channel(protocol):
    return channel_for(protocol)


def _bulk_step(step):
    """Run a bulk step without the cyclic garbage collector's pauses.

    Decrypt-and-validate, match and build each make hundreds of thousands of small objects
    (cells, numbers, rows) and almost no reference cycles. With the collector on, every few
    hundred allocations it runs, and its full passes re-scan the whole Airflow task process
    (~200,000 objects loaded before the step): ~0.4 s of the three steps for a 180,000-row
    request (``make bench``). The objects that exist before the step are frozen (never
    collected; they live as long as the process anyway) and collection waits until the step
    is over; reference counting still frees everything else at once.
    """

    @functools.wraps(step)
    def run(*args, **kwargs):
        with _collector_paused():
            return step(*args, **kwargs)

    return run


@contextlib.contextmanager
def _collector_paused():
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


# ----------------------------------------------------------------------------- 3. fetch


def fetch_request(protocol_id: int, item: dict[str, Any], run: RunInfo) -> int | None:
    """Take the request the arrival sensor found into staging (sealed with the staging key); open its exchange.

    ``item`` is what the channel's sensor pushed to XCom (a file in the SFTP inbox, or a
    message in the agency's mailbox). Returns the exchange id, or ``None`` when the request
    is a duplicate of one already processed (recorded in the audit; nothing else happens).
    """
    with session_scope() as session:
        channel = channel_for(get(session, protocol_id))
    return channel.fetch_request(protocol_id, item, run)


# ------------------------------------------------------------------ 4. decrypt and validate


@_bulk_step
def decrypt_and_validate(exchange_id: int, run: RunInfo, *, limits: IntakeLimits | None = None) -> dict[str, Any]:
    """Decrypt the request in memory, validate it, and stage the valid set (encrypted).

    A file that cannot be processed is quarantined on its channel, the municipality gets a
    validation report, and :class:`ExchangeRefused` says why. Re-run after the delivery, it
    reads nothing and answers from the ledger; re-run after a refusal, it refuses again.
    """
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        if exchange.state == "quarantined":
            raise ExchangeRefused(
                f"exchange {exchange_id} ({protocol.municipality}): the request file was refused "
                f"({exchange.failure_code}) and is not processed again. {_channel(protocol).refusal_hint} "
                "A corrected file makes a new exchange. Runbook: 'A request was refused'.",
                code=exchange.failure_code,
            )
        if delivered(session, exchange_id):
            log.info("exchange %s was already delivered; the request is not decrypted again", exchange_id)
            return {k: (exchange.counts or {}).get(k) for k in ("rows", "valid", "duplicates")}
        require_gate(protocol, exchange.exchange_date)
    staging = Staging(protocol.id, exchange.id)
    data = staging.read_request()
    try:
        outcome = read_request(
            data, key_password(protocol), as_of=exchange.exchange_date,
            age_window=(protocol.age_min, protocol.age_max), limits=limits or IntakeLimits.from_env(),
        )
    except IntakeError as err:
        if not failures.refused_by_sender(err):
            cause = failures.classify(err)
            raise AgencySideError(
                f"exchange {exchange_id} ({protocol.municipality}): the request could not be read on the agency's side "
                f"({cause.code}): {err}. Nothing was refused or reported to the municipality; the task is retried. "
                f"Runbook: '{cause.section}'.",
                code=cause.code,
            ) from err
        quarantine(exchange_id, err, run)
        raise ExchangeRefused(
            f"exchange {exchange_id} ({protocol.municipality}): the request file cannot be processed: {err} "
            f"{_channel(protocol).refusal_hint} "
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
            message=f"request decrypted in memory ({summary['encryption']}) and validated",
            fact_key=f"exchange:{exchange_id}:validated",
        )
    return summary


def receipt_text(protocol, exchange) -> bytes:
    """The acknowledgement of a request: what the municipality can check against its own file.

    Exchange id, when it was received, the SHA-256 of the file as received and the number of
    rows to be processed — no name, no number, nothing from inside the file.
    """
    received = exchange.created_at.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    rows = (exchange.counts or {}).get("valid")
    lines = [
        "Groeipakket - ontvangstbevestiging van uw aanvraag / acknowledgement of receipt of your request",
        "",
        f"Protocol: {protocol.id} ({protocol.nis_code})",
        f"Uitwisseling / exchange: {exchange.id}",
        f"Ontvangen op / received at: {received}",
        f"SHA-256 van het ontvangen bestand / of the file received: {exchange.request_sha256}",
        f"Rijen die verwerkt worden / rows to be processed: {rows}",
        "",
        "Het resultaat volgt via hetzelfde kanaal. / The result follows over the same channel.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def receipt_name(protocol, exchange) -> str:
    """Never the municipality's file name (it may hold personal data)."""
    return f"groeipakket_ontvangstbevestiging_{protocol.nis_code}_exchange-{exchange.id}.txt"


def send_receipt(exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Acknowledge the validated request to the municipality on its channel — once (the ledger).

    Runs after validation (the rows to be processed are known) beside the matching. A re-run, or
    a clear of the task, sends nothing again; the audit records ``request.acknowledged`` once.
    A refused request gets its validation report instead (this task does not run).
    """
    key = f"exchange:{exchange_id}:receipt"
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        if not ledger.is_done(session, key):
            require_gate(protocol, exchange.exchange_date)
        if (exchange.counts or {}).get("valid") is None:
            raise RuntimeError(f"exchange {exchange_id} is not validated yet: clear decrypt_and_validate first")
        payload, name = receipt_text(protocol, exchange), receipt_name(protocol, exchange)
    channel = channel_for(protocol)
    sent = channel.send_file(
        protocol, key=key, kind="receipt_sent", exchange_id=exchange_id, name=name, payload=payload,
        subject=f"Groeipakket: ontvangstbevestiging uitwisseling {exchange_id} / receipt of exchange {exchange_id}",
        content_type="text/plain", actor=run.actor, attempt=f"{run.run_id}:{run.try_number}",
        today=run.exchange_date, sensitive=False,
    )
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        if sent.location is not None:
            deadline, rule = ledger.result_deadline(protocol, exchange.exchange_date, what="receipt")
            channel.schedule_copy(session, protocol, exchange_id=exchange_id, kind="report", location=sent.location,
                                  deadline=deadline, rule=rule, sha256=sent.sha256, size=sent.size)
        audit.record(
            session, "request.acknowledged", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            file_hashes={"request": exchange.request_sha256, "receipt": sent.sha256},
            counts={"rows": (exchange.counts or {}).get("valid")},
            message=f"receipt of the request sent to the municipality ({channel.name}): exchange id, time of receipt, "
            "SHA-256 of its file, rows to be processed",
            fact_key=key,
        )
    return {"name": name, "sha256": sent.sha256, "already_sent": sent.already_sent}


def quarantine(exchange_id: int, err: IntakeError, run: RunInfo) -> None:
    """Set the refused request aside on its channel, send the municipality a report, record it (once each).

    Asked of the ledger first: a request already taken further (matched, delivered) is never
    moved to quarantine or reported as refused — :class:`ExchangeStateError` says so. Only a
    refusal the municipality caused is quarantined and reported: a failure on the agency's side
    (:func:`welfare_exchange.failures.refused_by_sender`) raises :class:`AgencySideError` and
    moves and sends nothing.
    """
    failures.require_sender_refusal(err, f"exchange {exchange_id}")
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        ledger.require_move(exchange, "quarantined")
    _channel(protocol).quarantine(exchange_id, err, run)


# ----------------------------------------------------------------------------- 5. match


@_bulk_step
def match_entitlements(exchange_id: int, run: RunInfo) -> dict[str, int]:
    """Set-join the valid numbers against the entitlement store; stage the rows (encrypted).

    Re-run after the delivery, it matches nothing again and answers from the ledger.
    """
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        if delivered(session, exchange_id):
            log.info("exchange %s was already delivered; it is not matched again", exchange_id)
            return {k: (exchange.counts or {}).get(k) for k in ("matched_rows", "matched_children", "beneficiaries")}
        require_gate(protocol, exchange.exchange_date)
    staging = Staging(protocol.id, exchange.id)
    numbers = staging.read_encrypted("valid").decode("ascii").split()
    with session_scope() as session:
        # The store as known when the exchange opened: a re-run reads the same versions, and
        # subject access can name them later (welfare_exchange.entitlements.history).
        rows = matching.match(
            session, numbers, supplements=protocol.supplements, reference_date=protocol.reference_date,
            exchange_date=exchange.exchange_date, known_at=exchange.created_at,
        )
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
            message=f"matched against the entitlement store: {', '.join(protocol.supplements)} "
            f"between {protocol.reference_date.isoformat()} and {exchange.exchange_date.isoformat()}, "
            f"as recorded at {history.moment(exchange.created_at).isoformat(timespec='seconds')}",
            fact_key=f"exchange:{exchange_id}:matched",
        )
    return counts


# ----------------------------------------------------------------------------- 6. build


@_bulk_step
def build_result(exchange_id: int, run: RunInfo, *, out: os.PathLike | str | None = None) -> dict[str, Any]:
    """Build the result workbook and encrypt it with the protocol's key (Agile, AES-256).

    Built once: when the staged result exists and matches the ledger's hash, it is reused, so a
    re-run delivers exactly the same bytes; once delivered, it is never built again (the ledger
    keeps the delivered result's hash). ``out`` also writes a copy there (the CLI dry run).
    """
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        sent = delivered(session, exchange_id)
    staging = Staging(protocol.id, exchange.id)
    if sent:
        log.info("exchange %s was already delivered; its result is not built again", exchange_id)
    elif exchange.result_sha256 and staging.sha256(RESULT_FILE) == exchange.result_sha256:
        log.info("result of exchange %s already built; reused", exchange_id)
    else:
        rows = matching.deserialise(staging.read_encrypted("matched"))
        report = json.loads(staging.read_encrypted("report"))
        plain = result.build_workbook(protocol, exchange, rows, report["rows"], report["summary"], result_deadline(protocol, exchange))
        built = encrypt_agile(plain, key_password(protocol))
        del plain
        staging.write_file(RESULT_FILE, built)
        with session_scope() as session:
            exchange, protocol = _exchange(session, exchange_id)
            ledger.update_exchange(session, exchange, state="built", result_sha256=hashlib.sha256(built).hexdigest())
            audit.record(
                session, "result.built", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                data_categories=[c for c in RESULT_CATEGORIES], file_hashes={"result": exchange.result_sha256},
                counts={"rows": len(rows)}, message="result workbook built and encrypted with the protocol's key (AES-256)",
                fact_key=f"exchange:{exchange_id}:built",
            )
    if out is not None:
        atomic_write(pathlib.Path(out), staging.read_file(RESULT_FILE))
    return {"result_sha256": exchange.result_sha256 or staging.sha256(RESULT_FILE), "name": result_file_name(protocol, exchange)}


# ------------------------------------------------------------------- beside 7. data subjects


@_bulk_step
def record_data_subjects(exchange_id: int, run: RunInfo) -> dict[str, int]:
    """Record whose data the exchange handled, as keyed references, for access requests (art. 15 GDPR).

    Two audit facts, each with the keyed HMAC of every person (never an INSZ): the children the
    request named (``request.subjects``) and the people in the result, matched children and
    their beneficiaries (``result.subjects``). :mod:`welfare_exchange.subjects` finds an
    exchange through them long after its files are deleted.

    It reads the staged lists, so it runs before ``record_retention`` deletes them, and beside
    the delivery rather than before it: ~200,000 references take about a second to index, and
    the municipality need not wait for that. The DAG also runs it when an earlier step failed,
    so an exchange that stopped halfway is indexed for what it got to. Re-runs record nothing
    twice (``fact_key``).
    """
    counts: dict[str, int] = {}
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        need_requested, need_result = _subjects_to_index(session, exchange_id)
    staging = Staging(protocol.id, exchange.id)
    # What the ledger says was staged must be found: an index that silently misses a step's
    # list would make subject access miss people (StagedFileMissing: cause staging_missing).
    requested = staging.read_encrypted("valid").decode("ascii").split() if need_requested else None
    pairs = matching.people(staging.read_encrypted("matched")) if need_result else None
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        if requested is not None:
            counts["requested"] = len(requested)
            audit.record(
                session, "request.subjects", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                data_categories=REQUEST_CATEGORIES, counts={"children": len(requested)}, subjects=requested,
                message="the children named in the request, as keyed references (for access requests)",
                fact_key=f"exchange:{exchange_id}:subjects:requested",
            )
        if pairs is not None:
            children = {child for child, _ in pairs}
            beneficiaries = {beneficiary for _, beneficiary in pairs}
            counts["in_result"] = len(children | beneficiaries)
            audit.record(
                session, "result.subjects", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                data_categories=RESULT_CATEGORIES, counts={"children": len(children), "beneficiaries": len(beneficiaries)},
                subjects=children | beneficiaries,
                message="the children and beneficiaries in the result, as keyed references (for access requests)",
                fact_key=f"exchange:{exchange_id}:subjects:result",
            )
    return counts


def _subjects_to_index(session, exchange_id: int) -> tuple[bool, bool]:
    """Whether the request's and the result's people are still to be indexed: their step's fact is
    recorded (so its staged list was written) and their subjects fact is not yet."""
    def fact(key: str) -> bool:
        return audit.fact_exists(session, f"exchange:{exchange_id}:{key}")

    if fact("retention"):  # the intermediates are gone by design (an exchange older than the index)
        return False, False
    return (fact("validated") and not fact("subjects:requested"), fact("matched") and not fact("subjects:result"))


# ----------------------------------------------------------------------------- 7. deliver


def recheck_gate(exchange_id: int, run: RunInfo) -> str:
    """The protocol gate once more, right before anything leaves the agency.

    The ledger speaks first (and the far side, for a delivery begun but not recorded): a result
    already delivered is not the gate's to block, so a protocol revoked after the delivery
    neither fails the exchange nor adds a "blocked" fact.
    A closed gate marks a not-yet-delivered exchange ``failed`` and raises
    :class:`ProtocolError` with the reason, for the operator.
    """
    with session_scope() as session:
        _, protocol = _exchange(session, exchange_id)
    if _channel(protocol).confirm_delivery(exchange_id, run):
        return f"exchange {exchange_id} was already delivered; nothing more leaves the agency"
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        decision = check_gate(protocol, exchange.exchange_date, kind="method1", channel=protocol.channel)
        if not decision.is_open:
            ledger.update_exchange(session, exchange, state="failed", failure_code="protocol_closed")
            audit.record(
                session, "result.delivery_blocked", "refused", actor=run.actor, protocol=protocol,
                exchange_id=exchange_id, message=decision.reason, fact_key=f"exchange:{exchange_id}:blocked",
            )
    if not decision.is_open:
        raise ProtocolError(f"delivery of exchange {exchange_id} blocked: {decision.reason}. Nothing was sent.")
    return decision.reason


def deliver_result(exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Send the result back over the protocol's channel — exactly once (the ledger decides).

    :func:`recheck_gate` asks the ledger before the gate: re-run after the delivery, this
    answers "already delivered" whatever the protocol's status is now.
    """
    recheck_gate(exchange_id, run)
    with session_scope() as session:
        _, protocol = _exchange(session, exchange_id)
    return _channel(protocol).deliver(exchange_id, run)


# ----------------------------------------------------------------------------- 8. retention


#: The intermediates ``record_retention`` drops, with the fact of the step that stages each.
INTERMEDIATES = (("valid", "validated"), ("report", "validated"), ("matched", "matched"))


def record_retention(exchange_id: int, run: RunInfo) -> dict[str, str]:
    """Record the result's deletion deadlines; drop the run's intermediates now."""
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
    staging = Staging(protocol.id, exchange.id)
    key = f"exchange:{exchange_id}:intermediates_deleted"
    with session_scope() as session:
        expected = [name for name, fact in INTERMEDIATES if audit.fact_exists(session, f"exchange:{exchange_id}:{fact}")]
        begun = ledger.find_side_effect(session, key) is not None
    missing = [name for name in expected if not staging.has(name)]
    if missing and not begun:
        # The steps staged intermediates this worker does not reach (another host's folder):
        # succeeding would leave them behind, unrecorded. (A try that began deleting them and
        # stopped is the one case where some may already be gone.)
        raise StagedFileMissing(
            f"exchange {exchange_id}: its intermediates ({', '.join(missing)}) are not in {staging.store.describe()}; "
            "they were staged where this worker does not reach (another worker host's folder?) and would stay there. "
            "With more than one worker host set WELFARE_EXCHANGE_STAGING_BACKEND=postgres (README 'More than one "
            f"worker host'), delete them on that host, then retry. Runbook: '{RUNBOOK_SECTION}'."
        )
    with session_scope() as session:
        ledger.begin_side_effect(session, key, kind="intermediates_deleted", exchange_id=exchange_id)
    removed = [name for name in ("valid", "matched", "report") if staging.remove(name)]
    with session_scope() as session:
        ledger.complete_side_effect(session, key, detail={"removed": removed})
    with session_scope() as session:
        exchange, protocol = _exchange(session, exchange_id)
        result_deadline_ = result_deadline(protocol, exchange)
        request_deadline_ = request_deadline(protocol, exchange)
        _channel(protocol).schedule_retention(session, protocol, exchange, result_deadline_, request_deadline_)
        staged_request = staging.request_name()
        if staged_request is not None and request_deadline_ < result_deadline_:
            # The staging folder lives as long as the result (a re-delivery sends the staged
            # file); the agency's copy of the request must go with the request's own deadline.
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=exchange_id, kind="request_file", where=staging.where,
                location=staging.location(staged_request), deadline=request_deadline_, sha256=exchange.request_sha256,
                rule=RULE_AFTER_MATCH.format(id=protocol.id) if protocol.delete_request_after_match
                else f"request: {protocol.request_retention_days} days after receipt (protocol {protocol.id})",
            )
        staging_deadline = max(request_deadline_, result_deadline_)
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange_id, kind="staging", where=staging.where,
            location=staging.location(), deadline=staging_deadline,
            rule="staging: kept until the request and result deadlines have both passed",
        )
        audit.record(
            session, "retention.scheduled", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
            counts={"intermediates_deleted": len(removed)},
            message=f"request to be deleted by {request_deadline_.isoformat()}, result by {result_deadline_.isoformat()}",
            fact_key=f"exchange:{exchange_id}:retention",
        )
        delete_now, exchange_date = protocol.delete_request_after_match, exchange.exchange_date
    if delete_now:
        # "Delete the request as soon as matching is done": every copy goes now, with its
        # deletion certificate, not at the next daily run. (Not inside the match step: until the
        # result is delivered, a cleared decrypt task must still find the request.) A server that
        # cannot be reached fails this task, which retries; the daily run is the fallback.
        from welfare_exchange.retention import runner

        runner.delete_due(exchange_date, actor=run.actor, exchange_id=exchange_id, kinds=REQUEST_COPIES)
    return {"request_deadline": request_deadline_.isoformat(), "result_deadline": result_deadline_.isoformat()}
