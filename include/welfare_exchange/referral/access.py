"""Right of access for referrals: what the agency holds and did about a person as a referral.

A referral keeps no INSZ: the child (whose birth the referral is about) and, when Kind en Gezin
gave it, the parent appear only as keyed references — in the audit trail's subject references
and in the referral ledger. Computing the same reference for the person's number finds

* the **facts** in the audit trail that name them (imported as a candidate, listed, left out
  before delivery, sent, feedback recorded, withdrawal notified) — these outlive the ledger;
* the **referrals** in the ledger: to which Sociaal Huis, under which agreement, when, which
  fields, the outcomes the Sociaal Huis reported, and whether it was told of a withdrawal;
* the **candidate** record still held: consent dates and criteria flagged (contact details are
  held sealed; the answer says so without opening them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.audit import subject_key
from welfare_exchange.db.models import AuditRecord, AuditSubject, Protocol, Referral, ReferralCandidate, ReferralFeedback
from welfare_exchange.referral.criteria import labels
from welfare_exchange.referral.feedback import OUTCOMES

#: What each audit action means to the person.
FACT_TEXT = {
    "referral.candidates_imported": "received from Kind en Gezin as a referral candidate",
    "referral.list_built": "put on a referral list for the Sociaal Huis",
    "referral.left_out": "left out of a referral list before it was sent (consent withdrawn)",
    "referral.list_sent": "referred: the list was delivered to the Sociaal Huis",
    "referral.feedback_recorded": "the Sociaal Huis reported back on the referral",
    "referral.withdrawal_notice_built": "a withdrawal notice was prepared for the Sociaal Huis",
    "referral.withdrawal_notified": "the Sociaal Huis was told of the consent withdrawal",
}


@dataclass
class ReferralDisclosure:
    """One referral of the person's family (no INSZ, no contact details in it)."""

    protocol_id: int
    sociaal_huis: str
    nis_code: str
    agreement_ref: str | None
    role: str  # child | parent
    referral_id: str
    listed_on: str
    sent_on: str | None
    fields: list[str]
    withdrawn_on: str | None
    withdrawal_notified: bool
    feedback: list[dict[str, str]]
    purpose: str
    legal_basis: str


@dataclass
class ReferralAccess:
    """Everything about the person as a referral: audit facts, referrals, the candidate record."""

    facts: list[dict[str, Any]] = field(default_factory=list)
    referrals: list[ReferralDisclosure] = field(default_factory=list)
    candidate: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"facts": self.facts, "referrals": [asdict(r) for r in self.referrals], "candidate": self.candidate}

    def __bool__(self) -> bool:
        return bool(self.facts or self.referrals or self.candidate)


def referrals_of(session: Session, number: str) -> ReferralAccess:
    """What the referral exchange holds and did about the person with INSZ ``number``."""
    key = subject_key(number)
    answer = ReferralAccess()
    facts = session.execute(
        sa.select(AuditRecord.recorded_at, AuditRecord.action, AuditRecord.protocol_id, AuditRecord.exchange_id)
        .join(AuditSubject, AuditSubject.audit_id == AuditRecord.id)
        .where(AuditSubject.subject_ref == key, AuditRecord.action.like("referral.%"))
        .order_by(AuditRecord.id)
    )
    for recorded_at, action, protocol_id, exchange_id in facts:
        answer.facts.append({
            "date": recorded_at[:10], "action": action, "what": FACT_TEXT.get(action, action),
            "protocol_id": protocol_id, "exchange_id": exchange_id,
        })
    rows = session.execute(
        sa.select(Referral, ReferralCandidate, Protocol)
        .join(ReferralCandidate, ReferralCandidate.id == Referral.candidate_id)
        .join(Protocol, Protocol.id == Referral.protocol_id)
        .where(sa.or_(Referral.family_ref == key, ReferralCandidate.parent_ref == key))
        .order_by(Referral.id)
    ).tuples()
    for referral, _candidate, protocol in rows:
        feedback = session.execute(
            sa.select(ReferralFeedback.outcome, ReferralFeedback.outcome_date)
            .where(ReferralFeedback.referral_id == referral.id)
            .order_by(ReferralFeedback.outcome_date, ReferralFeedback.id)
        ).all()
        answer.referrals.append(ReferralDisclosure(
            protocol_id=protocol.id, sociaal_huis=protocol.municipality, nis_code=protocol.nis_code,
            agreement_ref=protocol.agreement_ref, role="child" if bytes(referral.family_ref) == key else "parent",
            referral_id=referral.code, listed_on=referral.listed_on.isoformat(),
            sent_on=referral.sent_at.date().isoformat() if referral.sent_at else None,
            fields=list(protocol.allowed_fields),
            withdrawn_on=referral.withdrawn_on.isoformat() if referral.withdrawn_on else None,
            withdrawal_notified=referral.notice_exchange_id is not None,
            feedback=[{"outcome": OUTCOMES.get(o, o), "date": d.isoformat()} for o, d in feedback],
            purpose=protocol.purpose, legal_basis=protocol.legal_basis,
        ))
    candidate = session.scalars(
        sa.select(ReferralCandidate).where(sa.or_(ReferralCandidate.family_ref == key, ReferralCandidate.parent_ref == key))
    ).first()
    if candidate is not None:
        answer.candidate = {
            "role": "child" if bytes(candidate.family_ref) == key else "parent",
            "birth_month": candidate.birth_month,
            "nis_code": candidate.nis_code,
            "criteria": labels(candidate.criteria),
            "consent_given_on": _iso(candidate.consent_given_on),
            "consent_withdrawn_on": _iso(candidate.consent_withdrawn_on),
            "contact_details": "the parent's name and contact details, held encrypted",
        }
    return answer


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def render_lines(access: ReferralAccess) -> list[str]:
    """The referral part of a subject-access answer, as the operator hands it on."""
    if not access:
        return ["  referrals to a Sociaal Huis: none."]
    lines = ["  referrals to a Sociaal Huis (structurele toeleiding):"]
    if access.candidate:
        c = access.candidate
        consent = (
            f"consent given {c['consent_given_on']}" if c["consent_given_on"] else "no consent recorded"
        ) + (f", withdrawn {c['consent_withdrawn_on']}" if c["consent_withdrawn_on"] else "")
        lines.append(
            f"    held as candidate (as the {c['role']}): birth month {c['birth_month']}, domicile NIS {c['nis_code']}, "
            f"criteria {c['criteria'] or '-'}, {consent}; {c['contact_details']}"
        )
    for r in access.referrals:
        lines.append(
            f"    referral {r.referral_id} · Sociaal Huis {r.sociaal_huis} (NIS {r.nis_code}) · protocol {r.protocol_id}, "
            f"agreement {r.agreement_ref} · as the {r.role} · listed {r.listed_on} · "
            + (f"sent {r.sent_on}" if r.sent_on else "not sent")
        )
        lines.append(f"      fields sent: {', '.join(r.fields)}")
        for item in r.feedback:
            lines.append(f"      feedback: {item['outcome']} on {item['date']}")
        if r.withdrawn_on:
            lines.append(
                f"      consent withdrawn {r.withdrawn_on}; "
                + ("the Sociaal Huis was told" if r.withdrawal_notified else "the Sociaal Huis is still to be told")
            )
        lines.append(f"      purpose: {r.purpose}")
        lines.append(f"      legal basis: {r.legal_basis}")
    for fact in access.facts:
        lines.append(f"    {fact['date']}: {fact['what']} (protocol {fact['protocol_id'] or '-'})")
    return lines
