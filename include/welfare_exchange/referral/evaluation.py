"""The agency's evaluation of a referral agreement, and the referrals still awaiting feedback.

**Evaluation report** (:func:`evaluation_report`): for the referrals sent under one agreement,
the number per outcome (each referral counted once, by its latest outcome; "no feedback yet"
for the others) and, per criterion, the number of referred families flagged on it and their
outcomes. Counts are suppressed exactly as Method 2's report does
(:func:`welfare_exchange.outreach.report.suppress`: 1–9 shown as ``<10``, and further cells
hidden where a hidden one could be worked out by subtraction): each table row is a partition of
its families, which is what that rule is made for. The report names no family.

**Awaiting feedback** (:func:`awaiting_feedback`): sent referrals with no feedback after the
configured term (``WELFARE_EXCHANGE_REFERRAL_FEEDBACK_DAYS``), unless the family withdrew its
consent. The deadline alert is wired on it in the orchestration layer.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import Protocol, Referral, ReferralCandidate, ReferralFeedback
from welfare_exchange.outreach.report import PRIMARY, SECONDARY, THRESHOLD, suppress
from welfare_exchange.referral.criteria import CRITERIA
from welfare_exchange.referral.feedback import OUTCOMES
from welfare_exchange.settings import get_settings

NO_FEEDBACK = "no_feedback"
#: The report's outcome categories, in order: key → Dutch label.
CATEGORIES = {**OUTCOMES, NO_FEEDBACK: "nog geen terugkoppeling"}


@dataclass(frozen=True)
class Evaluation:
    """Exact counts (the agency's own figures) — :func:`render` suppresses them."""

    referrals: int
    by_outcome: dict[str, int]
    by_criterion: dict[str, dict[str, int]]  # criterion → outcome → referrals flagged on it


def latest_outcomes(session: Session, protocol: Protocol, until: dt.date) -> dict[int, str]:
    """Each sent referral's latest outcome reported on or before ``until`` (referral id → outcome)."""
    rows = session.execute(
        sa.select(ReferralFeedback.referral_id, ReferralFeedback.outcome, ReferralFeedback.outcome_date, ReferralFeedback.id)
        .join(Referral, Referral.id == ReferralFeedback.referral_id)
        .where(Referral.protocol_id == protocol.id, ReferralFeedback.outcome_date <= until)
        .order_by(ReferralFeedback.referral_id, ReferralFeedback.outcome_date, ReferralFeedback.id)
    )
    return {referral_id: outcome for referral_id, outcome, _, _ in rows}


def evaluate(session: Session, protocol: Protocol, until: dt.date) -> Evaluation:
    """The counts of the referrals sent under ``protocol`` up to ``until``."""
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    sent = session.execute(
        sa.select(Referral.id, Referral.criteria).where(
            Referral.protocol_id == protocol.id, Referral.sent_at.is_not(None), Referral.sent_at < end
        )
    ).all()
    latest = latest_outcomes(session, protocol, until)
    by_outcome: Counter[str] = Counter()
    by_criterion: dict[str, Counter[str]] = {name: Counter() for name in CRITERIA}
    for referral_id, criteria in sent:
        outcome = latest.get(referral_id, NO_FEEDBACK)
        by_outcome[outcome] += 1
        for name in criteria:
            if name in by_criterion:
                by_criterion[name][outcome] += 1
    return Evaluation(
        referrals=len(sent),
        by_outcome={key: by_outcome[key] for key in CATEGORIES},
        by_criterion={name: {key: counts[key] for key in CATEGORIES} for name, counts in by_criterion.items()},
    )


def render(protocol: Protocol, evaluation: Evaluation, until: dt.date) -> tuple[bytes, dict[str, dict[str, str]]]:
    """The report as UTF-8 text, and the suppressed figures it shows (``outcomes`` and per criterion)."""
    shown = {"outcomes": suppress(evaluation.by_outcome)}
    for name, counts in evaluation.by_criterion.items():
        shown[name] = suppress(counts)
    width = max(len(label) for label in CATEGORIES.values())
    lines = [
        "Kind en Gezin - evaluatie doorverwijzingen naar het Sociaal Huis",
        "",
        f"Sociaal Huis: {protocol.municipality} (NIS {protocol.nis_code})",
        f"Protocol: {protocol.id}; samenwerkingsovereenkomst {protocol.agreement_ref}",
        f"Doorverwijzingen verstuurd tot en met {until.isoformat()}",
        "",
        "Aantal gezinnen per resultaat (laatst gemelde resultaat):",
        *(f"  {label:<{width}}  {shown['outcomes'][key]:>11}" for key, label in CATEGORIES.items()),
        f"  {'Totaal doorverwezen':<{width}}  {shown['outcomes']['total']:>11}",
        "",
        "Per criterium kansarmoede (gezinnen met dat criterium, en hun resultaat):",
    ]
    for name, label in CRITERIA.items():
        row = shown[name]
        lines.append(f"  {label}: {row['total']} gezinnen")
        lines.append("    " + "; ".join(f"{CATEGORIES[key]} {row[key]}" for key in CATEGORIES))
    lines += [
        "",
        f"Aantallen van 1 tot {THRESHOLD - 1} staan als '{PRIMARY}'. Zodat ze niet door aftrekken te vinden zijn,",
        f"staan ook andere aantallen als '{SECONDARY}'. Een gezin heeft meerdere criteria: de rijen per criterium",
        "tellen niet op tot het totaal. Dit rapport bevat geen persoonsgegevens.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8"), shown


def evaluation_report(session: Session, protocol: Protocol, until: dt.date) -> bytes:
    """The agency's evaluation report of ``protocol`` up to ``until`` (counts only, suppressed)."""
    return render(protocol, evaluate(session, protocol, until), until)[0]


def report_name(protocol: Protocol, until: dt.date) -> str:
    return f"evaluatie-doorverwijzingen-{protocol.nis_code}-p{protocol.id}-{until.isoformat()}.txt"


@dataclass(frozen=True)
class Awaiting:
    """A referral sent and not answered within the term: its opaque id, when it was sent, days waiting."""

    code: str
    sent_on: dt.date
    days: int


def awaiting_feedback(session: Session, protocol: Protocol, on: dt.date, *, term_days: int | None = None) -> list[Awaiting]:
    """Referrals sent under ``protocol`` more than the term ago with no feedback yet (oldest first).

    A family that withdrew its consent is not awaited: the Sociaal Huis was told to stop.
    """
    term = get_settings().referral_feedback_days if term_days is None else term_days
    cutoff = dt.datetime.combine(on - dt.timedelta(days=term), dt.time(), tzinfo=dt.timezone.utc)
    rows = session.execute(
        sa.select(Referral.code, Referral.sent_at)
        .where(
            Referral.protocol_id == protocol.id,
            Referral.sent_at.is_not(None),
            Referral.sent_at < cutoff,
            ~sa.exists().where(ReferralFeedback.referral_id == Referral.id),
            ~sa.exists().where(
                ReferralCandidate.id == Referral.candidate_id,
                ReferralCandidate.consent_withdrawn_on.is_not(None),
                ReferralCandidate.consent_withdrawn_on <= on,
            ),
        )
        .order_by(Referral.sent_at, Referral.id)
    )
    return [Awaiting(code, sent_at.date(), (on - sent_at.date()).days) for code, sent_at in rows]
