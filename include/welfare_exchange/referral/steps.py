"""The referral DAGs' steps: plain functions of the protocol id and a :class:`RunInfo`.

Each step is what one task of :mod:`welfare_exchange.orchestration.referral_dag` does, callable
from tests and the demo without a scheduler. Every step is idempotent: a cleared task or a
re-run gives the same result and the same side effects once — no list, notice or report is
sent twice (the ledger keys of :mod:`.listing`, :mod:`.withdrawal` and the ones below), no
family is referred twice under one agreement. They return counts only (they go to XCom).

The run date is the run's logical date (:attr:`RunInfo.exchange_date`), never the wall clock;
only the moment a list was sent (``sent_at``) is the real one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

import sqlalchemy as sa

from welfare_exchange import alerts, audit, ledger
from welfare_exchange.channels.registry import channel_for
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.protocols import get
from welfare_exchange.referral import delivery, evaluation, feedback, files, listing, withdrawal
from welfare_exchange.referral.selection import require_gate, selection_counts
from welfare_exchange.settings import get_settings
from welfare_exchange.staging import atomic_write

log = logging.getLogger(__name__)

EVALUATION_KIND = "referral_evaluation"


def recheck_gate(protocol_id: int, run: RunInfo) -> str:
    """The gate once more right before delivery: a protocol revoked meanwhile blocks it."""
    with session_scope() as session:
        require_gate(get(session, protocol_id), run.exchange_date)
    return "open"


# ----------------------------------------------------------------------------- the list out


def build_referral_list(protocol_id: int, run: RunInfo) -> dict[str, Any]:
    """Select the families due and build the encrypted list (once per agreement and run date).

    Returns the selection's counts (why families are left out) and the list's exchange id.
    """
    with session_scope() as session:
        protocol = get(session, protocol_id)
        counts = selection_counts(session, protocol, run.exchange_date)
    password = delivery.key_password(protocol)
    with session_scope() as session:
        protocol = get(session, protocol_id)
        built = listing.build_referral_list(session, protocol, run.exchange_date, password=password, actor=run.actor)
        exchange = listing.find_list_exchange(session, protocol, run.exchange_date)
        families = built.rows if built is not None else 0
    log.info(
        "referral list for protocol %s on %s: %d families (in the municipality %d, kansarmoede %d, no consent %d, "
        "withdrawn %d, already referred %d)", protocol_id, run.exchange_date, families, counts.in_municipality,
        counts.kansarmoede, counts.no_consent, counts.withdrawn, counts.already_referred,
    )
    return {
        "exchange_id": exchange.id if exchange is not None else None, "families": families,
        "no_consent": counts.no_consent, "withdrawn": counts.withdrawn, "already_referred": counts.already_referred,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def deliver_referral_list(protocol_id: int, run: RunInfo) -> dict[str, Any]:
    """Deliver the run date's list on the agreement's channel, exactly once; mark its referrals sent.

    Families whose consent was withdrawn since the list was built are left out first
    (:func:`listing.for_delivery`); a list nobody is left on is not sent.
    """
    with session_scope() as session:
        protocol = get(session, protocol_id)
        exchange = listing.find_list_exchange(session, protocol, run.exchange_date)
    if exchange is None:
        return {"sent": 0, "families": 0}
    password = delivery.key_password(protocol)
    with session_scope() as session:
        protocol = get(session, protocol_id)
        ready = listing.for_delivery(session, protocol, exchange.id, run.exchange_date, password=password, actor=run.actor)
    if ready is None:
        return {"sent": 0, "families": 0}
    sent = delivery.send_once(
        protocol, ready.data, listing.list_file_name(protocol, run.exchange_date), key=listing.delivery_key(ready.exchange_id),
        kind=listing.DELIVERY_KIND, exchange_id=ready.exchange_id,
        subject=f"Doorverwijzingen Kind en Gezin - protocol {protocol.id}", run=run,
        on_done=lambda session: listing.mark_sent(session, ready.exchange_id, at=_now(), actor=run.actor),
    )
    return {"sent": 1, "families": ready.rows, "already_delivered": sent["already_delivered"]}


def notify_withdrawals(protocol_id: int, run: RunInfo) -> dict[str, Any]:
    """Tell the Sociaal Huis, once per family, whose consent was withdrawn after its referral was sent."""
    with session_scope() as session:
        protocol = get(session, protocol_id)
        require_gate(protocol, run.exchange_date)
    password = delivery.key_password(protocol)
    with session_scope() as session:
        protocol = get(session, protocol_id)
        built = withdrawal.build_withdrawal_notice(session, protocol, run.exchange_date, password=password, actor=run.actor)
    if built is None:
        return {"notices": 0, "families": 0}
    sent = delivery.send_once(
        protocol, built.data, withdrawal.notice_file_name(protocol, run.exchange_date),
        key=withdrawal.notice_delivery_key(built.exchange_id), kind=withdrawal.DELIVERY_KIND, exchange_id=built.exchange_id,
        subject=f"Intrekking toestemming doorverwijzing - protocol {protocol.id}", run=run,
        on_done=lambda session: withdrawal.mark_notice_sent(session, built.exchange_id, actor=run.actor),
    )
    return {"notices": 1, "families": built.rows, "already_delivered": sent["already_delivered"]}


def record_retention(protocol_id: int, run: RunInfo) -> dict[str, Any]:
    """Deletion deadlines of the run date's list and notice: the staged copy and the one sent."""
    scheduled = 0
    with session_scope() as session:
        protocol = get(session, protocol_id)
        on = run.exchange_date
        for exchange, name in (
            (listing.find_list_exchange(session, protocol, on), listing.list_file_name(protocol, on)),
            (withdrawal.find_notice_exchange(session, protocol, on), withdrawal.notice_file_name(protocol, on)),
        ):
            if exchange is None:
                continue
            deadline = files.schedule_retention(session, protocol, exchange)
            scheduled += 1
            remote = delivery.remote_copy(protocol, name)
            if remote is not None and exchange.state == "delivered":
                ledger.schedule_deletion(
                    session, protocol_id=protocol.id, exchange_id=exchange.id, kind="result_file", where=remote[0],
                    location=remote[1], deadline=deadline, sha256=exchange.result_sha256,
                    rule=ledger.result_deadline(protocol, exchange.exchange_date, what="referral file sent",
                                                after="it was built")[1],
                )
                scheduled += 1
    return {"scheduled": scheduled}


# ----------------------------------------------------------------------------- feedback in


def _take_key(protocol_id: int, run: RunInfo) -> str:
    return f"referral-feedback-take:{protocol_id}:{run.dag_id}:{run.run_id}"


def receive_feedback(protocol_id: int, handle: Any, run: RunInfo) -> dict[str, Any]:
    """Take the feedback file off the agreement's channel, decrypt, validate and record it.

    The channel takes it once (SFTP: ``inbox/`` → ``received/``; e-mail: S/MIME-opened and checked
    like a Method 1 request, ``INBOX`` → ``Processed``). A refused file goes on to
    ``quarantine/`` / ``Rejected`` and the Sociaal Huis gets the refusal report (line numbers and
    codes, never a value) on the same channel. The same bytes received before are a duplicate:
    audited, recorded nothing. Returns the exchange id and counts.
    """
    with session_scope() as session:
        protocol = get(session, protocol_id)
        require_gate(protocol, run.exchange_date)
    password = delivery.key_password(protocol)
    taken = delivery.take(protocol, handle, key=_take_key(protocol_id, run), run=run)
    with session_scope() as session:
        protocol = get(session, protocol_id)
        result = feedback.receive_feedback(session, protocol, taken.data, password=password, on=run.exchange_date, actor=run.actor)
        exchange = ledger.get_exchange(session, result.exchange_id)
        deadline, rule = ledger.request_deadline(protocol, run.exchange_date, what="feedback file")
    if result.refused is not None:
        taken = delivery.quarantine_feedback(protocol, taken, key=f"referral-feedback:{result.exchange_id}:quarantined")
        report = feedback.refusal_report(protocol, exchange, result.refused)
        name = f"terugkoppeling_geweigerd_{protocol.nis_code}_exchange-{result.exchange_id}.txt"
        delivery.send_once(
            protocol, report, name, key=f"referral-feedback:{result.exchange_id}:report", kind="report_delivered",
            exchange_id=result.exchange_id, subject=f"Terugkoppeling geweigerd - protocol {protocol.id}", run=run,
            sensitive=False,
        )
        copy = delivery.remote_copy(protocol, name)
        if copy is not None:
            with session_scope() as session:
                ledger.schedule_deletion(
                    session, protocol_id=protocol.id, exchange_id=result.exchange_id, kind="report", where=copy[0],
                    location=copy[1], deadline=deadline, rule=rule, sha256=hashlib.sha256(report).hexdigest(), size=len(report),
                )
    with session_scope() as session:  # the copy the channel keeps (a file, a message), verified by its digest when deleted
        channel_for(protocol).schedule_copy(
            session, protocol, exchange_id=result.exchange_id,
            kind="quarantine" if result.refused is not None else "request_file",
            location=taken.location, deadline=deadline, rule=rule, sha256=taken.sha256, size=taken.size,
        )
    del taken
    state = "duplicate" if result.duplicate_of is not None else "refused" if result.refused is not None else "recorded"
    out = {"exchange_id": result.exchange_id, "state": state, **{k: int(v) for k, v in result.counts.items()}}
    if result.refused is not None:
        out["refusal"] = result.refused.code
    return out


def _evaluation_key(exchange_id: int) -> str:
    return f"referral-evaluation:{exchange_id}"


def report_evaluation(protocol_id: int, exchange_id: int, run: RunInfo) -> dict[str, Any]:
    """Write the evaluation report (suppressed counts, no personal data) to the agency's own outbox.

    Once per recorded feedback file: a re-run leaves the report as it was. The figures shown are
    kept with the ledger entry, which is where the Exchanges view reads them.
    """
    key = _evaluation_key(exchange_id)
    with session_scope() as session:
        done = ledger.find_side_effect(session, key)
        if done is not None and done.state == "done":
            return {"name": done.target, "already_written": True}
        protocol = get(session, protocol_id)
        exchange = ledger.get_exchange(session, exchange_id)
        if exchange.state != "validated":
            return {"name": None, "skipped": exchange.state}
        data, shown = evaluation.render(protocol, evaluation.evaluate(session, protocol, run.exchange_date), run.exchange_date)
        name = evaluation.report_name(protocol, run.exchange_date).replace(".txt", f"-x{exchange_id}.txt")
    path = get_settings().agency_outbox / "referral" / name
    with ledger.side_effect(key, kind=EVALUATION_KIND, exchange_id=exchange_id, target=name) as effect:
        atomic_write(path, data)
        with session_scope() as session:
            protocol = get(session, protocol_id)
            effect.complete(sha256=hashlib.sha256(data).hexdigest(), detail={"bytes": len(data), "shown": shown},
                            session=session)
            audit.record(
                session, "referral.evaluation_reported", actor=run.actor, protocol=protocol, exchange_id=exchange_id,
                file_hashes={"report": hashlib.sha256(data).hexdigest()},
                message=f"evaluation report of the referrals to the Sociaal Huis of {protocol.municipality} written to "
                "the agency's outbox (counts only, small counts suppressed)",
                fact_key=key,
            )
    return {"name": name, "already_written": False, "referred": shown["outcomes"]["total"]}


def latest_evaluation(session, protocol_id: int) -> dict[str, Any] | None:
    """The newest evaluation report of a protocol: its file name, date and the figures it shows."""
    from welfare_exchange.db.models import SideEffect

    effect = session.scalar(
        sa.select(SideEffect)
        .join(Exchange, Exchange.id == SideEffect.exchange_id)
        .where(SideEffect.kind == EVALUATION_KIND, SideEffect.state == "done", Exchange.protocol_id == protocol_id)
        .order_by(SideEffect.id.desc())
        .limit(1)
    )
    if effect is None:
        return None
    shown = (effect.detail or {}).get("shown") or {}
    return {"file": effect.target, "at": effect.done_at, "outcomes": {k: str(v) for k, v in (shown.get("outcomes") or {}).items()}}


def check_feedback_deadline(protocol_id: int, run: RunInfo) -> dict[str, Any]:
    """Flag referrals sent more than the term ago without feedback: one audit fact per run date
    (``referral.feedback_overdue``) and an error line in the task log — counts only."""
    term = get_settings().referral_feedback_days
    with session_scope() as session:
        protocol: Protocol = get(session, protocol_id)
        waiting = evaluation.awaiting_feedback(session, protocol, run.exchange_date, term_days=term)
        if waiting:
            audit.record(
                session, "referral.feedback_overdue", "failure", actor=run.actor, protocol=protocol,
                counts={"referrals": len(waiting), "oldest_days": max(w.days for w in waiting)},
                message=f"{len(waiting)} referral(s) to the Sociaal Huis of {protocol.municipality} have no feedback "
                f"after {term} days (the oldest {max(w.days for w in waiting)} days). Runbook: 'A referral awaits feedback'.",
                fact_key=f"referral-overdue:{protocol_id}:{run.exchange_date.isoformat()}",
            )
    if waiting:
        log.error(
            "DEADLINE MISSED: %d referral(s) of protocol %s have no feedback after %d days; "
            "see `welfare-exchange referral awaiting --protocol %s`", len(waiting), protocol_id, term, protocol_id,
        )
        # The operator's alert (webhook / e-mail), once per run: counts and ids only.
        alerts.send_failure_alert(
            dag_id=run.dag_id or "referral", run_id=run.run_id or run.exchange_date.isoformat(),
            task_id=run.task_id or "check_feedback_deadline", protocol_id=protocol_id, cause="referral_feedback_overdue",
            reason=f"{len(waiting)} referral(s) have no feedback from the Sociaal Huis after {term} days "
            f"(the oldest {max(w.days for w in waiting)} days)",
            runbook="docs/referral.md § 'A referral awaits feedback'",
        )
    return {"overdue": len(waiting), "term_days": term}
