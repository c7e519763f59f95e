"""Right of access (art. 15 GDPR): which exchanges included a person's data.

The audit trail never stores an INSZ: every record of an exchange carries the keyed-HMAC
references of the people it concerned (``audit_subject``) — the requested children at
``request.subjects``, the matched children and their beneficiaries at ``result.subjects`` (both
written by the exchange's ``record_data_subjects`` task).
Computing the same HMAC for the person's number finds exactly those exchanges, and the
protocol and ledger give the rest: municipality, date, data categories, purpose, legal basis,
and whether the result was delivered.

A person's data appears as one of three roles:

* ``requested`` — a child named in the municipality's request (the municipality sent the
  number; the agency checked it);
* ``result_child`` — a requested child with a *sociale toeslag*, in the result returned;
* ``result_beneficiary`` — the *begunstigde* (the parent who is paid) of such a child.

Referrals to a Sociaal Huis are answered apart (:func:`add_referrals`,
:mod:`welfare_exchange.referral.access`): a referral names the family by keyed reference only.

Once the trail has been pruned after its legal term, the answer says from when on it is
complete: exchanges before that can no longer be reported (their records, and so the
references of the people in them, are gone) — never a bare "no exchange".

Per exchange the answer also lists the person's entitlement versions the agency knew when the
exchange read the entitlement store (:func:`entitlements_known`): the store keeps every version
with the moment it was recorded, so a delivery made on since-corrected data can be explained
(and the correction shown).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit
from welfare_exchange.audit.trail import PRUNED_ACTION, subject_key
from welfare_exchange.db.models import AuditRecord, AuditSubject, Exchange, Protocol
from welfare_exchange.entitlements import history
from welfare_exchange.feeds.changes import knowledge_moment
from welfare_exchange.referral import access as referral_access
from welfare_exchange.settings import get_settings

#: The audit actions that name an exchange's subjects: the children of the request, and the
#: people in the result. (``request.validated`` and ``entitlements.matched`` carried them in
#: exchanges recorded before the ``record_data_subjects`` task existed.)
REQUESTED_ACTIONS = {"request.subjects", "request.validated"}
RESULT_ACTIONS = {"result.subjects", "entitlements.matched"}
ROLE_TEXT = {
    "requested": "child named in the municipality's request",
    "result_child": "child with a sociale toeslag, in the result",
    "result_beneficiary": "beneficiary (begunstigde), in the result",
    "other": "named in the exchange's audit records (another kind of exchange, e.g. Method 2 or a feed)",
}


@dataclass
class ExchangeDisclosure:
    """One exchange that included the person's data (no personal data in it)."""

    exchange_id: int
    protocol_id: int
    municipality: str
    nis_code: str
    exchange_date: str | None
    state: str
    delivered: bool
    roles: list[str]
    data_categories: list[str]
    fields: list[str]
    purpose: str
    legal_basis: str
    #: The person's entitlement versions known when the exchange read the store (see :class:`KnownEntitlement`).
    entitlements_known: list[dict[str, Any]] = field(default_factory=list)
    #: When the exchange read the store (ISO, UTC).
    store_read_at: str | None = None
    #: The store's history begins after that moment: what it knew then cannot be told.
    before_store_history: bool = False


@dataclass
class PersonReport:
    """What the trail holds about the person on ``line`` of the INSZ file."""

    line: int
    exchanges: list[ExchangeDisclosure] = field(default_factory=list)
    #: When the trail was pruned: the moment (UTC, ISO) from which on it is complete; exchanges
    #: before it can no longer be reported. ``None``: never pruned, the answer covers everything.
    reportable_from: str | None = None
    #: Referrals of the person's family to a Sociaal Huis (:func:`add_referrals`).
    referrals: referral_access.ReferralAccess = field(default_factory=referral_access.ReferralAccess)

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "exchanges": [asdict(e) for e in self.exchanges], "reportable_from": self.reportable_from,
                "referrals": self.referrals.as_dict()}


def reportable_from(session: Session) -> str | None:
    """The time of the oldest record the trail still holds, when a chained pruning fact says the
    records before it were pruned; ``None`` when the trail was never pruned."""
    pruning = session.scalars(
        sa.select(AuditRecord).where(AuditRecord.action == PRUNED_ACTION).order_by(AuditRecord.id.desc()).limit(1)
    ).first()
    if pruning is None:
        return None
    return session.scalar(sa.select(AuditRecord.recorded_at).order_by(AuditRecord.id).limit(1))


def exchanges_of(session: Session, number: str) -> list[ExchangeDisclosure]:
    """The exchanges whose audit records name ``number`` (through its keyed HMAC), oldest first."""
    ref = subject_key(number)
    hits = session.execute(
        sa.select(AuditRecord.exchange_id, AuditRecord.action, AuditRecord.data_categories, AuditRecord.legal_basis)
        .join(AuditSubject, AuditSubject.audit_id == AuditRecord.id)
        .where(AuditSubject.subject_ref == ref, AuditRecord.exchange_id.is_not(None), ~AuditRecord.action.like("referral.%"))
        .order_by(AuditRecord.id)
    ).all()
    seen: dict[int, dict[str, Any]] = defaultdict(lambda: {"actions": set(), "categories": set(), "legal_basis": None})
    for exchange_id, action, categories, legal_basis in hits:
        entry = seen[exchange_id]
        entry["actions"].add(action)
        entry["categories"].update(categories or [])
        entry["legal_basis"] = entry["legal_basis"] or legal_basis
    out = []
    for exchange_id, entry in sorted(seen.items()):
        row = session.execute(
            sa.select(Exchange, Protocol).join(Protocol, Protocol.id == Exchange.protocol_id).where(Exchange.id == exchange_id)
        ).first()
        if row is None:
            continue
        exchange, protocol = row
        roles = []
        requested = bool(entry["actions"] & REQUESTED_ACTIONS)
        if requested:
            roles.append("requested")
        if entry["actions"] & RESULT_ACTIONS:
            roles.append("result_child" if requested else "result_beneficiary")
        if not roles:
            roles.append("other")
        delivered = exchange.state == "delivered"
        out.append(
            ExchangeDisclosure(
                exchange_id=exchange.id,
                protocol_id=protocol.id,
                municipality=protocol.municipality,
                nis_code=protocol.nis_code,
                exchange_date=exchange.exchange_date.isoformat() if exchange.exchange_date else None,
                state=exchange.state,
                delivered=delivered,
                roles=roles,
                data_categories=sorted(entry["categories"]),
                fields=list(protocol.allowed_fields) if any(r.startswith("result_") for r in roles) else [],
                purpose=protocol.purpose,
                legal_basis=entry["legal_basis"] or protocol.legal_basis,
            )
        )
    return out


@dataclass(frozen=True)
class KnownEntitlement:
    """One of the person's entitlement versions, without any number (the other party is a role)."""

    role: str  # "child" (the person gave right) | "beneficiary" (the person was paid)
    supplement: str
    period_start: str
    period_end: str | None
    recorded_from: str
    superseded_at: str | None  # when a later extract corrected or withdrew it; None: still current


def _store_read_at(session: Session, exchange: Exchange, protocol: Protocol) -> dt.datetime | None:
    """The moment whose knowledge of the entitlement store the exchange used.

    A structural feed reads the store as known at its interval's end; Method 1 and Method 2 as
    known when the exchange opened (see ``matching.match`` and ``selection.select_families``).
    """
    if protocol.kind == "structural":
        return knowledge_moment(session, exchange.exchange_date) if exchange.exchange_date else None
    return history.moment(exchange.created_at)


def entitlements_known(session: Session, number: str, disclosures: list[ExchangeDisclosure]) -> None:
    """Fill each disclosure with the person's entitlement versions known when its exchange ran."""
    first = history.history_start(session) if disclosures else None
    for disclosure in disclosures:
        exchange = session.get(Exchange, disclosure.exchange_id)
        at = _store_read_at(session, exchange, session.get(Protocol, disclosure.protocol_id))
        disclosure.store_read_at = at.isoformat(timespec="seconds") if at else None
        disclosure.before_store_history = at is None or first is None or at < first
        if disclosure.before_store_history:
            continue
        disclosure.entitlements_known = [
            asdict(KnownEntitlement(
                role="child" if v.child_insz == number else "beneficiary",
                supplement=v.supplement,
                period_start=v.start_date.isoformat(),
                period_end=v.end_date.isoformat() if v.end_date else None,
                recorded_from=v.recorded_from.isoformat(timespec="seconds"),
                superseded_at=v.recorded_to.isoformat(timespec="seconds") if v.recorded_to else None,
            ))
            for v in history.as_known_on(session, at, children=[number], beneficiaries=[number])
        ]


def _render_entitlements_known(e: ExchangeDisclosure) -> list[str]:
    if e.before_store_history:
        return ["    entitlements known then: cannot be told (the entitlement store's history begins later)"]
    if not e.entitlements_known:
        return [f"    entitlements known when it read the store ({e.store_read_at}): none for this person"]
    lines = [f"    entitlements known when it read the store ({e.store_read_at}):"]
    for k in e.entitlements_known:
        corrected = f"; corrected or withdrawn on {k['superseded_at'][:10]}" if k["superseded_at"] else ""
        lines.append(
            f"      {SUPPLEMENT_TEXT.get(k['supplement'], k['supplement'])} as the {k['role']}, "
            f"{k['period_start']} to {k['period_end'] or 'ongoing'} (recorded {k['recorded_from'][:10]}{corrected})"
        )
    return lines


SUPPLEMENT_TEXT = {"sociale_toeslag": "sociale toeslag", "zorgtoeslag": "zorgtoeslag", "schooltoeslag": "schooltoeslag"}


def subject_access(session: Session, numbers: list[str], *, actor: audit.Actor) -> list[PersonReport]:
    """Answer an access request for the people in ``numbers``; the request itself is audited.

    The audit record names the people only by their keyed HMAC and carries no exchange id, so
    it never shows up as an "exchange" in a later access request.
    """
    since = reportable_from(session)
    reports = [
        PersonReport(line=index, exchanges=exchanges_of(session, number), reportable_from=since)
        for index, number in enumerate(numbers, 1)
    ]
    for report, number in zip(reports, numbers):
        entitlements_known(session, number, report.exchanges)
    add_referrals(session, numbers, reports)
    audit.record(
        session, "subject.access_request", actor=actor, subjects=numbers,
        counts={"persons": len(numbers), "exchanges_found": sum(len(r.exchanges) for r in reports)},
        message=f"access request (art. 15 GDPR) answered for {len(numbers)} person(s) on {dt.date.today().isoformat()}"
        + (f"; exchanges before {_shown(since)} could not be reported (audit trail pruned after its legal term)" if since else ""),
    )
    return reports


def add_referrals(session: Session, numbers: list[str], reports: list[PersonReport]) -> None:
    """Fill each person's referrals to a Sociaal Huis (their own section of the answer)."""
    for report, number in zip(reports, numbers):
        report.referrals = referral_access.referrals_of(session, number)


def _shown(moment: str) -> str:
    """A record time as the answer shows it: to the minute, UTC."""
    return dt.datetime.fromisoformat(moment).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _pruned_text(since: str) -> str:
    years = round(get_settings().audit_retention_days / 365.25)
    return (
        f"exchanges before {_shown(since)} can no longer be reported: the audit trail was pruned after its "
        f"legal term ({years} years), and with it the records of those exchanges."
    )


def render_text(reports: list[PersonReport]) -> str:
    """The answer as an operator hands it on (one block per line of the INSZ file)."""
    lines = []
    for report in reports:
        lines.append(f"Person on line {report.line} of the INSZ file:")
        if not report.exchanges and report.reportable_from:
            lines.append(f"  no exchange from {_shown(report.reportable_from)} on included this person's data;")
        elif not report.exchanges:
            lines.append("  no exchange in this system included this person's data.")
        if report.reportable_from:
            lines.append(f"  {_pruned_text(report.reportable_from)}")
        for e in report.exchanges:
            lines.append(
                f"  exchange {e.exchange_id} · {e.exchange_date or '-'} · {e.municipality} (NIS {e.nis_code}) · "
                f"protocol {e.protocol_id} · {'delivered to the municipality' if e.delivered else f'not delivered ({e.state})'}"
            )
            lines.append(f"    as: {'; '.join(ROLE_TEXT[r] for r in e.roles)}")
            lines.append(f"    data categories: {', '.join(e.data_categories) or '-'}")
            if e.fields:
                lines.append(f"    result fields: {', '.join(e.fields)}")
            lines.append(f"    purpose: {e.purpose}")
            lines.append(f"    legal basis: {e.legal_basis}")
            lines.extend(_render_entitlements_known(e))
        lines.extend(referral_access.render_lines(report.referrals))
    return "\n".join(lines)
