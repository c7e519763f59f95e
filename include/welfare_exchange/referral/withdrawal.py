"""Consent withdrawn after a referral was sent: the Sociaal Huis is told, once per family.

Before delivery a withdrawal simply leaves the family out (:mod:`.selection`,
:func:`~welfare_exchange.referral.listing.for_delivery`). After delivery the Sociaal Huis holds the
family's contact details, so it receives a **withdrawal notice**: a workbook encrypted with the
agreement's key listing only the referral ids and the date of each withdrawal (``Intrekkingen``),
with an ``Info`` sheet saying what to do — stop contact and delete the family's data received
under the referral.

:func:`build_withdrawal_notice` gathers, on a run date, every sent referral whose family withdrew
and that no notice named yet, marks them with the notice's exchange (so no later notice names
them again) and builds the file once. Delivery is wired in the orchestration layer, like the
list's: :func:`notice_delivery_key`, then :func:`mark_notice_sent` in the transaction that
completes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, ledger, xlsx
from welfare_exchange.db.models import Exchange, Protocol, Referral, ReferralCandidate
from welfare_exchange.referral import files
from welfare_exchange.referral.listing import CODE_HEADING
from welfare_exchange.referral.selection import require_gate

NOTICE_NAME = "withdrawal_notice.xlsx"
DELIVERY_KIND = "referral_withdrawal"


def notice_file_name(protocol: Protocol, on: dt.date) -> str:
    return f"intrekkingen_{protocol.nis_code}_p{protocol.id}_{on.isoformat()}.xlsx"


def notice_delivery_key(exchange_id: int) -> str:
    return f"referral-withdrawal:{exchange_id}:delivered"


def _key(protocol: Protocol, on: dt.date) -> str:
    return f"referral-withdrawal:{protocol.id}:{on.isoformat()}"


def find_notice_exchange(session: Session, protocol: Protocol, on: dt.date) -> Exchange | None:
    """The ledger exchange of the withdrawal notice of ``protocol`` for ``on``, if one was opened."""
    digest = hashlib.sha256(_key(protocol, on).encode()).hexdigest()
    return session.scalar(sa.select(Exchange).where(Exchange.protocol_id == protocol.id, Exchange.request_sha256 == digest))


def _noticed(session: Session, exchange_id: int) -> list[Referral]:
    return list(session.scalars(sa.select(Referral).where(Referral.notice_exchange_id == exchange_id).order_by(Referral.id)))


def render_notice(protocol: Protocol, on: dt.date, referrals: list[Referral]) -> bytes:
    """The notice's plaintext xlsx (in memory only): referral ids and withdrawal dates, nothing else."""
    book = files.workbook(protocol, on, f"Intrekking toestemming - Sociaal Huis {protocol.municipality}")
    book.add_sheet(
        "Intrekkingen",
        [xlsx.Column(CODE_HEADING, xlsx.TEXT, 22), xlsx.Column("Datum intrekking", xlsx.DATE, 18)],
        [(r.code, r.withdrawn_on) for r in referrals],
    )
    book.add_info_sheet("Info", [
        *files.agreement_lines(protocol),
        ("Datum bericht", on.isoformat()),
        ("Aantal gezinnen", str(len(referrals))),
        (
            "Wat te doen",
            "Deze gezinnen hebben hun toestemming voor de doorverwijzing ingetrokken. Neem geen contact meer op "
            "en verwijder de gegevens die u voor deze doorverwijzingen ontving, volgens de samenwerkingsovereenkomst.",
        ),
    ])
    return book.to_bytes()


def build_withdrawal_notice(
    session: Session, protocol: Protocol, on: dt.date, *, password: str, actor: audit.Actor
) -> files.BuiltFile | None:
    """The encrypted withdrawal notice of ``protocol`` for ``on``, or ``None`` when nobody withdrew.

    Each sent referral is named in one notice only; a re-run for the same date gives the same bytes.
    """
    require_gate(protocol, on)
    exchange = find_notice_exchange(session, protocol, on)
    if exchange is not None and files.delivery_begun(session, exchange, notice_delivery_key(exchange.id)):
        return files.staged(exchange, NOTICE_NAME)  # fixed bytes; None once retention removed them
    if exchange is None:
        due = session.execute(
            sa.select(Referral, ReferralCandidate.consent_withdrawn_on)
            .join(ReferralCandidate, ReferralCandidate.id == Referral.candidate_id)
            .where(
                Referral.protocol_id == protocol.id,
                Referral.sent_at.is_not(None),
                Referral.notice_exchange_id.is_(None),
                ReferralCandidate.consent_withdrawn_on.is_not(None),
                ReferralCandidate.consent_withdrawn_on <= on,
            )
            .order_by(Referral.id)
        ).tuples().all()
        if not due:
            return None
        exchange, _ = files.open_exchange(session, protocol, _key(protocol, on), notice_file_name(protocol, on), on, actor)
        for referral, withdrawn_on in due:
            referral.notice_exchange_id, referral.withdrawn_on = exchange.id, withdrawn_on
        session.flush()
    referrals = _noticed(session, exchange.id)
    if not referrals:
        return None
    built = files.build_once(
        session, exchange, NOTICE_NAME, lambda: (render_notice(protocol, on, referrals), len(referrals)), password
    )
    audit.record(
        session, "referral.withdrawal_notice_built", actor=actor, protocol=protocol, exchange_id=exchange.id,
        data_categories=["doorverwijzingsnummer", "datum intrekking toestemming"], file_hashes={"notice": built.sha256},
        counts={"families": len(referrals)}, subject_refs=[bytes(r.family_ref) for r in referrals],
        message=f"withdrawal notice for the Sociaal Huis of {protocol.municipality} built: {len(referrals)} families",
        fact_key=f"referral-withdrawal-built:{exchange.id}:{built.sha256}",
    )
    return built


def mark_notice_sent(session: Session, exchange_id: int, *, actor: audit.Actor) -> None:
    """Record a notice delivered (in the transaction that completes its delivery); idempotent."""
    exchange = ledger.get_exchange(session, exchange_id)
    ledger.update_exchange(session, exchange, state="delivered")
    referrals = _noticed(session, exchange_id)
    audit.record(
        session, "referral.withdrawal_notified", actor=actor, protocol=session.get(Protocol, exchange.protocol_id),
        exchange_id=exchange_id, file_hashes={"notice": exchange.result_sha256}, counts={"families": len(referrals)},
        subject_refs=[bytes(r.family_ref) for r in referrals],
        message=f"withdrawal notice {exchange_id} delivered to the Sociaal Huis: {len(referrals)} families",
        fact_key=f"referral-withdrawal-sent:{exchange_id}",
    )
