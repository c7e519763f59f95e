"""The retention rules: when each thing an exchange leaves behind must be gone.

Deadlines are recorded in the ledger (:class:`~welfare_exchange.db.models.RetentionItem`) by the
exchange steps as they create things — the request at fetch, the quarantined file and its report
at quarantine, the result and the staging folder at ``record_retention``. The rules here adjust
those deadlines before every retention run, all keyed on the run's date (``as_of``), never on
the wall clock:

* **Days after delivery** — each protocol's ``request_retention_days`` and
  ``result_retention_days``, counted from the exchange date (set by the steps).
* **Delete the request as soon as matching is done** — for protocols with
  ``delete_request_after_match``: the request file in ``received/`` and its staged copy are due
  on the exchange date once the exchange got past matching. The exchange's own
  ``record_retention`` step applies this (:func:`on_matched`) and deletes them at once, right
  after delivery; the daily run does it for any it could not reach.
* **The legal maximum** (``WELFARE_EXCHANGE_MAX_RETENTION_DAYS``): no deadline may lie later than
  that many days after its exchange date. A later deadline is clamped and the clamp is audited
  (the setting can be lowered after protocols were signed with longer terms).
* **Protocol end** — a protocol whose ``valid_until`` passed is moved to ``expired``; the pending
  exchanges of expired and revoked protocols are stopped, and all their data becomes due now.
* **Ledger payloads** — once every file of an exchange is gone, the names and remote paths the
  ledger still holds for it (the request file name is chosen by the municipality) are cleared.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, ledger
from welfare_exchange.db.models import Exchange, Protocol, RetentionItem
from welfare_exchange.protocols import registry
from welfare_exchange.settings import get_settings
from welfare_exchange.staging import Staging

#: Exchange states after which the request is no longer needed for matching.
MATCHED_STATES = ("matched", "built", "delivered")
#: Exchange states that end an exchange; anything else is still pending.
FINAL_STATES = ("delivered", "duplicate", "quarantined", "failed")
#: Protocol statuses that end all data flow for good.
ENDED_STATUSES = ("revoked", "expired")

RULE_AFTER_MATCH = "request: deleted as soon as matching is done (protocol {id})"
RULE_CLAMPED = "legal maximum: {days} days after the exchange"
RULE_PROTOCOL_END = "protocol {status}: all its data deleted at protocol end"
RULE_LEDGER_PAYLOAD = "ledger: file names cleared once the exchange's files are gone"


@dataclass
class RuleReport:
    """What applying the rules changed (counts only: it goes to XCom and the task log)."""

    protocols_expired: list[int] = field(default_factory=list)
    exchanges_stopped: int = 0
    items_due_at_protocol_end: int = 0
    requests_due_after_match: int = 0
    deadlines_clamped: int = 0
    ledger_payloads_scheduled: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def legal_limit(exchange_date: dt.date, max_days: int | None = None) -> dt.date:
    """The last day anything of an exchange of ``exchange_date`` may still exist."""
    days = get_settings().max_retention_days if max_days is None else max_days
    return exchange_date + dt.timedelta(days=days)


def effective_deadline(deadline: dt.date, exchange_date: dt.date | None, max_days: int | None = None) -> tuple[dt.date, bool]:
    """``(deadline, clamped)``: the recorded deadline, or the legal maximum when that is earlier."""
    if exchange_date is None:
        return deadline, False
    limit = legal_limit(exchange_date, max_days)
    return (limit, True) if deadline > limit else (deadline, False)


# --------------------------------------------------------------------------- protocol end


def expire_protocols(session: Session, as_of: dt.date, *, actor: audit.Actor) -> list[int]:
    """Move signed or suspended protocols whose ``valid_until`` lies before ``as_of`` to ``expired``.

    Goes through :func:`welfare_exchange.protocols.transition`, so the change is a recorded
    transition and an audit fact like any other; the registry snapshot is rewritten so the
    DAGs show the new status.
    """
    due = session.scalars(
        sa.select(Protocol)
        .where(Protocol.status.in_(("signed", "suspended")), Protocol.valid_until.is_not(None), Protocol.valid_until < as_of)
        .order_by(Protocol.id)
    ).all()
    expired = []
    for protocol in due:
        registry.transition(
            session, protocol.id, "expire", actor=actor, on=as_of,
            reason=f"valid until {protocol.valid_until.isoformat()}; retention run of {as_of.isoformat()}",
        )
        expired.append(protocol.id)
    if expired:
        registry.write_snapshot(session)
    return expired


def end_protocols(session: Session, as_of: dt.date, *, actor: audit.Actor, report: RuleReport | None = None) -> RuleReport:
    """Expire what ran out; stop pending exchanges of ended protocols; make all their data due now.

    Idempotent: a second run on the same day finds every exchange already stopped and every
    deadline already on or before ``as_of``, and changes nothing.
    """
    report = report or RuleReport()
    report.protocols_expired += expire_protocols(session, as_of, actor=actor)
    ended = session.scalars(sa.select(Protocol).where(Protocol.status.in_(ENDED_STATUSES)).order_by(Protocol.id)).all()
    for protocol in ended:
        stopped = 0
        pending = session.scalars(
            sa.select(Exchange)
            .where(Exchange.protocol_id == protocol.id, Exchange.state.not_in(FINAL_STATES))
            .order_by(Exchange.id)
        ).all()
        for exchange in pending:
            # The Method 1 gate already refuses a revoked or expired protocol; marking the ledger
            # makes the stop visible (and final) even for a run that is not active right now.
            ledger.update_exchange(session, exchange, state="failed", failure_code=f"protocol_{protocol.status}")
            audit.record(
                session, "exchange.stopped", "refused", actor=actor, protocol=protocol, exchange_id=exchange.id,
                message=f"exchange {exchange.id} stopped before delivery: protocol {protocol.id} is {protocol.status}; "
                "nothing more is sent under it",
                fact_key=f"exchange:{exchange.id}:stopped",
            )
            stopped += 1
        # A staging folder the steps have not recorded yet (an exchange stopped mid-way) is
        # recorded here, so it cannot outlive the protocol.
        rule = RULE_PROTOCOL_END.format(status=protocol.status)
        moved = 0
        for exchange_id in session.scalars(sa.select(Exchange.id).where(Exchange.protocol_id == protocol.id)):
            staging = Staging(protocol.id, exchange_id)
            if staging.exists():
                moved += _ensure_item(session, protocol.id, exchange_id, "staging", staging.where, staging.location(), as_of, rule)
        items = session.scalars(
            sa.select(RetentionItem).where(
                RetentionItem.protocol_id == protocol.id, RetentionItem.deleted_at.is_(None), RetentionItem.deadline > as_of
            )
        ).all()
        for item in items:
            item.deadline, item.rule = as_of, rule
        moved += len(items)
        if stopped or moved:
            audit.record(
                session, "retention.protocol_ended", actor=actor, protocol=protocol,
                counts={"exchanges_stopped": stopped, "items_due_now": moved},
                message=f"protocol {protocol.id} is {protocol.status}: {stopped} pending exchange(s) stopped, "
                f"{moved} item(s) to delete now (run of {as_of.isoformat()})",
                fact_key=f"protocol:{protocol.id}:ended:{as_of.isoformat()}",
            )
        report.exchanges_stopped += stopped
        report.items_due_at_protocol_end += moved
    session.flush()
    return report


# --------------------------------------------------------------------------- the other rules


def _ensure_item(
    session: Session, protocol_id: int, exchange_id: int | None, kind: str, where: str, location: str,
    deadline: dt.date, rule: str, sha256: str | None = None,
) -> bool:
    """Record an item, or bring an existing one's deadline forward; True when something changed."""
    existing = session.scalar(sa.select(RetentionItem).where(RetentionItem.kind == kind, RetentionItem.location == location))
    if existing is not None:
        if existing.deleted_at is None and existing.deadline > deadline:
            existing.deadline, existing.rule = deadline, rule
            return True
        return False
    ledger.schedule_deletion(
        session, protocol_id=protocol_id, exchange_id=exchange_id, kind=kind, where=where, location=location,
        deadline=deadline, rule=rule, sha256=sha256,
    )
    return True


def request_after_match(session: Session, exchange: Exchange, protocol: Protocol) -> int:
    """Make the request file (remote ``received/`` copy and staged copy) due on the exchange date.

    Only for a protocol with ``delete_request_after_match`` and an exchange past matching.
    Returns how many deadlines moved or were added.
    """
    if not protocol.delete_request_after_match or exchange.state not in MATCHED_STATES:
        return 0
    rule = RULE_AFTER_MATCH.format(id=protocol.id)
    changed = 0
    for item in session.scalars(
        sa.select(RetentionItem).where(
            RetentionItem.exchange_id == exchange.id,
            RetentionItem.kind.in_(("request_file", "request_message")),
            RetentionItem.deleted_at.is_(None),
        )
    ):
        if item.deadline > exchange.exchange_date:
            item.deadline, item.rule = exchange.exchange_date, rule
            changed += 1
    staging = Staging(protocol.id, exchange.id)
    staged = staging.request_name()
    if staged is not None:
        changed += _ensure_item(session, protocol.id, exchange.id, "request_file", staging.where, staging.location(staged),
                                exchange.exchange_date, rule, exchange.request_sha256)
    session.flush()
    return changed


def on_matched(exchange_id: int) -> int:
    """Hook for the match step: apply "delete the request as soon as matching is done" at once.

    Without it, the daily retention run applies the rule on its next run. Safe to call for any
    protocol (a no-op unless the protocol asks for it) and any number of times.
    """
    from welfare_exchange.db import session_scope

    with session_scope() as session:
        exchange = ledger.get_exchange(session, exchange_id)
        protocol = registry.get(session, exchange.protocol_id)
        return request_after_match(session, exchange, protocol)


def clamp_to_legal_maximum(session: Session, *, actor: audit.Actor, max_days: int | None = None) -> int:
    """Pull every pending deadline later than the legal maximum back to it; audit each clamp."""
    days = get_settings().max_retention_days if max_days is None else max_days
    rows = session.execute(
        sa.select(RetentionItem, Exchange.exchange_date)
        .join(Exchange, Exchange.id == RetentionItem.exchange_id)
        .where(RetentionItem.deleted_at.is_(None), Exchange.exchange_date.is_not(None))
        .order_by(RetentionItem.id)
    ).all()
    clamped = 0
    for item, exchange_date in rows:
        deadline, was_clamped = effective_deadline(item.deadline, exchange_date, days)
        if not was_clamped:
            continue
        old_deadline, old_rule = item.deadline, item.rule
        item.deadline, item.rule = deadline, RULE_CLAMPED.format(days=days)
        audit.record(
            session, "retention.clamped", actor=actor, protocol_id=item.protocol_id, exchange_id=item.exchange_id,
            message=f"{item.kind} deadline {old_deadline.isoformat()} ({old_rule}) exceeds the legal maximum of "
            f"{days} days (WELFARE_EXCHANGE_MAX_RETENTION_DAYS); clamped to {deadline.isoformat()}",
            fact_key=f"retention:{item.id}:clamped:{deadline.isoformat()}",
        )
        clamped += 1
    session.flush()
    return clamped


def schedule_ledger_payloads(session: Session, as_of: dt.date) -> int:
    """Exchanges whose every file is gone: clear what the ledger still names (from ``as_of``)."""
    done = (
        sa.select(RetentionItem.exchange_id)
        .where(RetentionItem.exchange_id.is_not(None), RetentionItem.where != "db")
        .group_by(RetentionItem.exchange_id)
        .having(sa.func.count() == sa.func.count(RetentionItem.deleted_at))
    )
    scheduled = 0
    for exchange in session.scalars(sa.select(Exchange).where(Exchange.id.in_(done)).order_by(Exchange.id)):
        scheduled += _ensure_item(session, exchange.protocol_id, exchange.id, "ledger_payload", "db",
                                  f"exchange:{exchange.id}", as_of, RULE_LEDGER_PAYLOAD)
    session.flush()
    return scheduled


def apply_rules(session: Session, as_of: dt.date, *, actor: audit.Actor, report: RuleReport | None = None) -> RuleReport:
    """Every rule but protocol end, in the order a retention run needs them."""
    report = report or RuleReport()
    matched = session.execute(
        sa.select(Exchange, Protocol)
        .join(Protocol, Protocol.id == Exchange.protocol_id)
        .where(Protocol.delete_request_after_match.is_(True), Exchange.state.in_(MATCHED_STATES))
        .order_by(Exchange.id)
    ).all()
    for exchange, protocol in matched:
        report.requests_due_after_match += request_after_match(session, exchange, protocol)
    report.deadlines_clamped += clamp_to_legal_maximum(session, actor=actor)
    report.ledger_payloads_scheduled += schedule_ledger_payloads(session, as_of)
    return report
