"""Which families a referral list carries: consent, domicile, kansarmoede, not referred before.

On the run date ``on`` a candidate is selected under a referral protocol when

* the protocol's gate is open on ``on`` (signed, within the agreement's validity, kind referral);
* the family's consent is recorded (given on or before ``on``) and not withdrawn (no withdrawal on
  or before ``on``);
* the child is domiciled in the agreement's municipality (the Sociaal Huis's NIS code);
* the family is in *kansarmoede* (at least three of the six criteria flagged);
* the family was not referred under this agreement before (no row in the referral ledger).

One query; nothing is read row by row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import Protocol, Referral, ReferralCandidate
from welfare_exchange.errors import ProtocolError
from welfare_exchange.protocols import check_gate
from welfare_exchange.referral.criteria import KANSARMOEDE_THRESHOLD


def require_gate(protocol: Protocol, on: dt.date) -> None:
    """Raise :class:`ProtocolError` unless the referral protocol lets a referral flow on ``on``."""
    decision = check_gate(protocol, on, kind="referral", channel=protocol.channel, fields=list(protocol.allowed_fields))
    if not decision.is_open:
        raise ProtocolError(f"protocol gate {decision.state}: {decision.reason}")
    if not protocol.consent_required:
        raise ProtocolError(f"protocol {protocol.id} does not require consent: no referral may flow under it")


def consent_holds(on: dt.date):
    """SQL: the candidate's consent is recorded and not withdrawn on ``on``."""
    return sa.and_(
        ReferralCandidate.consent_given_on.is_not(None),
        ReferralCandidate.consent_given_on <= on,
        sa.or_(ReferralCandidate.consent_withdrawn_on.is_(None), ReferralCandidate.consent_withdrawn_on > on),
    )


def consent_holds_on(candidate: ReferralCandidate, on: dt.date) -> bool:
    """:func:`consent_holds` for one candidate already read."""
    given, withdrawn = candidate.consent_given_on, candidate.consent_withdrawn_on
    return given is not None and given <= on and (withdrawn is None or withdrawn > on)


def _not_referred(protocol_id: int):
    return ~sa.exists().where(Referral.protocol_id == protocol_id, Referral.family_ref == ReferralCandidate.family_ref)


def select_candidates(session: Session, protocol: Protocol, on: dt.date) -> list[ReferralCandidate]:
    """The candidates to refer under ``protocol`` on ``on``, by candidate id (the same data give the same list)."""
    require_gate(protocol, on)
    query = (
        sa.select(ReferralCandidate)
        .where(
            ReferralCandidate.nis_code == protocol.nis_code,
            ReferralCandidate.criteria_count >= KANSARMOEDE_THRESHOLD,
            consent_holds(on),
            _not_referred(protocol.id),
        )
        .order_by(ReferralCandidate.id)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class SelectionCounts:
    """Why families in the municipality are (not) selected — counts only, for the operator."""

    in_municipality: int
    kansarmoede: int
    no_consent: int
    withdrawn: int
    already_referred: int
    selected: int


def selection_counts(session: Session, protocol: Protocol, on: dt.date) -> SelectionCounts:
    """A dry run of :func:`select_candidates`, counting each reason a family in kansarmoede is left out."""
    base = sa.select(sa.func.count()).select_from(ReferralCandidate).where(ReferralCandidate.nis_code == protocol.nis_code)
    poor = base.where(ReferralCandidate.criteria_count >= KANSARMOEDE_THRESHOLD)
    withdrawn = sa.and_(
        ReferralCandidate.consent_withdrawn_on.is_not(None), ReferralCandidate.consent_withdrawn_on <= on
    )
    no_consent = sa.and_(~consent_holds(on), ~withdrawn)
    referred = ~_not_referred(protocol.id)
    return SelectionCounts(
        in_municipality=session.scalar(base),
        kansarmoede=session.scalar(poor),
        no_consent=session.scalar(poor.where(no_consent)),
        withdrawn=session.scalar(poor.where(withdrawn)),
        already_referred=session.scalar(poor.where(consent_holds(on), referred)),
        selected=session.scalar(poor.where(consent_holds(on), ~referred)),
    )
