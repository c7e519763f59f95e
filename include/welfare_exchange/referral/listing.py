"""The referral list: the families a Sociaal Huis may contact, with only the agreement's fields.

One list per protocol and run date, built by :func:`build_referral_list`:

1. the gate (:func:`~welfare_exchange.referral.selection.require_gate`) and the selection;
2. one row per family in the referral ledger (``referral``, unique per agreement and family,
   keyed on the family's keyed reference — never an INSZ) with a new opaque referral id, the
   criteria as flagged today and the list's exchange;
3. the workbook (``Doorverwijzingen``: the referral id and only the fields the agreement allows;
   ``Info``: the Sociaal Huis, the agreement, its secrecy conditions, how to give feedback and
   when to delete the file), encrypted with the protocol's key and kept in staging (:mod:`.files`).

Delivery (wired in the orchestration layer) asks :func:`for_delivery` for the bytes, records its
side effect under :func:`delivery_key`, and in the transaction that completes it calls
:func:`mark_sent`, which marks every referral of the list sent in one statement. A family whose
consent is withdrawn after the list was built but before its delivery began is left out: the list
is built again without it and its ledger row removed (it was never sent).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, ledger, xlsx
from welfare_exchange.db.models import Exchange, Protocol, Referral, ReferralCandidate
from welfare_exchange.errors import ProtocolError
from welfare_exchange.referral import contacts, files
from welfare_exchange.referral.criteria import labels
from welfare_exchange.referral.selection import consent_holds_on, require_gate, select_candidates
from welfare_exchange.settings import get_settings
from welfare_exchange.staging import Staging

#: The staged name of a list; what the Sociaal Huis receives is :func:`list_file_name`.
LIST_NAME = "referral_list.xlsx"
#: The delivery's side effect in the ledger: its kind and (:func:`delivery_key`) its key.
DELIVERY_KIND = "referral_list"
CODE_HEADING = "Doorverwijzingsnummer"
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read over the phone

Getter = Callable[[contacts.Contact, Referral, ReferralCandidate], object]
#: Per allowed field: its columns (heading, kind, width) and how each cell is read.
FIELD_COLUMNS: dict[str, list[tuple[xlsx.Column, Getter]]] = {
    "parent_name": [(xlsx.Column("Naam ouder", xlsx.LABEL, 32), lambda c, r, k: c.name)],
    "parent_address": [
        (xlsx.Column("Adres", xlsx.LABEL, 36), lambda c, r, k: c.address_line),
        (xlsx.Column("Postcode", xlsx.TEXT, 10), lambda c, r, k: c.postcode),
        (xlsx.Column("Gemeente", xlsx.LABEL, 22), lambda c, r, k: c.city),
    ],
    "parent_phone": [(xlsx.Column("Telefoon", xlsx.TEXT, 18), lambda c, r, k: c.phone)],
    "parent_email": [(xlsx.Column("E-mail", xlsx.LABEL, 32), lambda c, r, k: c.email)],
    "child_birth_month": [(xlsx.Column("Geboortemaand kind", xlsx.TEXT, 20), lambda c, r, k: k.birth_month)],
    "criteria": [(xlsx.Column("Criteria kansarmoede", xlsx.LABEL, 60), lambda c, r, k: labels(r.criteria))],
}
#: The audit's data categories per allowed field.
FIELD_CATEGORIES = {
    "parent_name": "naam ouder",
    "parent_address": "adres ouder",
    "parent_phone": "telefoon ouder",
    "parent_email": "e-mail ouder",
    "child_birth_month": "geboortemaand kind",
    "criteria": "criteria kansarmoede",
}


def new_code() -> str:
    """An opaque referral id, e.g. ``DV-K7QM-3XTA``: random, so it says nothing about the family."""
    chars = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    return f"DV-{chars[:4]}-{chars[4:]}"


def list_file_name(protocol: Protocol, on: dt.date) -> str:
    """What the Sociaal Huis receives, e.g. ``doorverwijzingen_44021_p12_2026-12-07.xlsx``."""
    return f"doorverwijzingen_{protocol.nis_code}_p{protocol.id}_{on.isoformat()}.xlsx"


def delivery_key(exchange_id: int) -> str:
    """The ledger key of a list's delivery: delivered once, whatever re-runs."""
    return f"referral-list:{exchange_id}:delivered"


def _list_key(protocol: Protocol, on: dt.date) -> str:
    return f"referral-list:{protocol.id}:{on.isoformat()}"


def _members(session: Session, exchange_id: int) -> list[tuple[Referral, ReferralCandidate]]:
    return list(
        session.execute(
            sa.select(Referral, ReferralCandidate)
            .join(ReferralCandidate, ReferralCandidate.id == Referral.candidate_id)
            .where(Referral.exchange_id == exchange_id)
            .order_by(Referral.id)
        ).tuples()
    )


def render_list(protocol: Protocol, on: dt.date, members: Sequence[tuple[Referral, ReferralCandidate]]) -> bytes:
    """The list's plaintext xlsx (in memory only): the referral id, then the agreement's fields."""
    columns = [(xlsx.Column(CODE_HEADING, xlsx.TEXT, 18), lambda c, r, k: r.code)]
    for name in FIELD_COLUMNS:
        if name in protocol.allowed_fields:
            columns += FIELD_COLUMNS[name]
    rows = []
    for referral, candidate in members:
        contact = contacts.unseal(candidate.contact_sealed)
        rows.append([get(contact, referral, candidate) for _, get in columns])
    term = get_settings().referral_feedback_days
    book = files.workbook(protocol, on, f"Doorverwijzingen naar het Sociaal Huis {protocol.municipality}")
    book.add_sheet("Doorverwijzingen", [column for column, _ in columns], rows)
    book.add_info_sheet("Info", [
        *files.agreement_lines(protocol),
        ("Datum lijst", on.isoformat()),
        ("Aantal gezinnen", str(len(rows))),
        ("Toestemming", "Elk gezin op deze lijst gaf zijn toestemming voor deze doorverwijzing."),
        (
            "Terugkoppeling",
            f"Meld per doorverwijzingsnummer binnen {term} dagen het resultaat (gecontacteerd, ondersteuning "
            "gestart, geweigerd, onbereikbaar, verhuisd) met het terugkoppelingssjabloon, versleuteld met het "
            "afgesproken wachtwoord.",
        ),
        (
            "Intrekking",
            "Trekt een gezin zijn toestemming in, dan ontvangt u een intrekkingsbericht met het doorverwijzingsnummer: "
            "neem dan geen contact meer op en verwijder de gegevens van dat gezin.",
        ),
        ("Vernietigen uiterlijk op", (on + dt.timedelta(days=protocol.result_retention_days)).isoformat()),
    ])
    return book.to_bytes()


def find_list_exchange(session: Session, protocol: Protocol, on: dt.date) -> Exchange | None:
    """The ledger exchange of the list of ``protocol`` for the run date ``on``, if one was opened."""
    digest = hashlib.sha256(_list_key(protocol, on).encode()).hexdigest()
    return session.scalar(sa.select(Exchange).where(Exchange.protocol_id == protocol.id, Exchange.request_sha256 == digest))


def build_referral_list(
    session: Session, protocol: Protocol, on: dt.date, *, password: str, actor: audit.Actor
) -> files.BuiltFile | None:
    """The encrypted referral list of ``protocol`` for the run date ``on``, or ``None`` when no family is due.

    Idempotent: a re-run for the same date returns the same bytes (the list is built once and its
    families are fixed in the ledger); families selected for it are never selected again under
    this agreement.
    """
    require_gate(protocol, on)
    name = list_file_name(protocol, on)
    exchange = find_list_exchange(session, protocol, on)
    if exchange is not None and files.delivery_begun(session, exchange, delivery_key(exchange.id)):
        return files.staged(exchange, LIST_NAME)  # fixed bytes; None once retention removed them
    if exchange is not None:
        members = _members(session, exchange.id)
        return _build(session, protocol, exchange, members, on, password) if members else None
    candidates = select_candidates(session, protocol, on)
    if not candidates:
        audit.record(
            session, "referral.nothing_to_refer", "skipped", actor=actor, protocol=protocol,
            message=f"no family is due for referral to the Sociaal Huis of {protocol.municipality} on {on.isoformat()}",
            fact_key=f"referral-none:{protocol.id}:{on.isoformat()}",
        )
        return None
    exchange, _ = files.open_exchange(session, protocol, _list_key(protocol, on), name, on, actor)
    for candidate in candidates:
        session.add(Referral(
            protocol_id=protocol.id, candidate_id=candidate.id, family_ref=candidate.family_ref, code=new_code(),
            criteria=list(candidate.criteria), exchange_id=exchange.id, listed_on=on,
        ))
    session.flush()
    members = _members(session, exchange.id)
    built = _build(session, protocol, exchange, members, on, password)
    audit.record(
        session, "referral.list_built", actor=actor, protocol=protocol, exchange_id=exchange.id,
        data_categories=categories(protocol), file_hashes={"list": built.sha256}, counts={"families": built.rows},
        subject_refs=_refs(members),
        message=f"referral list for the Sociaal Huis of {protocol.municipality} built: {built.rows} families",
        fact_key=f"referral-list-built:{exchange.id}:{built.sha256}",
    )
    return built


def categories(protocol: Protocol) -> list[str]:
    return ["doorverwijzingsnummer", *(FIELD_CATEGORIES[f] for f in FIELD_CATEGORIES if f in protocol.allowed_fields)]


def _refs(members: Sequence[tuple[Referral, ReferralCandidate]]) -> list[bytes]:
    """Whom the list is about: each family's child reference, and its parent's when known."""
    refs = [bytes(r.family_ref) for r, _ in members]
    return refs + [bytes(c.parent_ref) for _, c in members if c.parent_ref is not None]


def _build(session, protocol, exchange, members, on, password, *, rebuild: bool = False) -> files.BuiltFile:
    return files.build_once(
        session, exchange, LIST_NAME, lambda: (render_list(protocol, on, members), len(members)), password,
        rebuild=rebuild,
    )


def for_delivery(
    session: Session, protocol: Protocol, exchange_id: int, on: dt.date, *, password: str, actor: audit.Actor
) -> files.BuiltFile | None:
    """The bytes to deliver for a built list, or ``None`` when no family is left on it.

    Once the delivery has begun (its side effect is in the ledger) the bytes are fixed: they may
    have reached the Sociaal Huis. Before that, the gate is asked again, and families whose consent
    no longer holds on ``on`` are left out — their ledger rows removed, the list built again.
    """
    exchange = ledger.get_exchange(session, exchange_id)
    if files.delivery_begun(session, exchange, delivery_key(exchange.id)):
        fixed = files.staged(exchange, LIST_NAME)
        if fixed is None:
            raise ProtocolError(
                f"the referral list of exchange {exchange.id} is no longer in staging although its delivery began: "
                "check the Sociaal Huis's outbox and the ledger before sending anything again"
            )
        return fixed
    require_gate(protocol, on)
    members = _members(session, exchange.id)
    left = [(r, c) for r, c in members if not consent_holds_on(c, on)]
    if left:
        for referral, _ in left:
            session.delete(referral)
        session.flush()
        audit.record(
            session, "referral.left_out", actor=actor, protocol=protocol, exchange_id=exchange.id,
            counts={"families": len(left)}, subject_refs=_refs(left),
            message=f"{len(left)} family(ies) left out of referral list {exchange.id} before delivery: consent withdrawn",
        )
        members = [(r, c) for r, c in members if consent_holds_on(c, on)]
    if not members:  # nobody left: the built file (which named them) goes, nothing is delivered
        Staging(exchange.protocol_id, exchange.id).remove(LIST_NAME)
        ledger.update_exchange(session, exchange, result_sha256=None, counts={"rows": 0})
        return None
    return _build(session, protocol, exchange, members, exchange.exchange_date, password, rebuild=bool(left))


def mark_sent(session: Session, exchange_id: int, *, at: dt.datetime, actor: audit.Actor) -> int:
    """Record a list delivered: every referral on it sent, the exchange ``delivered``; returns how many.

    Call it in the transaction that completes the delivery's side effect, so the ledger never
    says "delivered" without its referrals, nor the reverse. Idempotent.
    """
    exchange = ledger.get_exchange(session, exchange_id)
    at = at.astimezone(dt.timezone.utc)
    count = session.execute(
        sa.update(Referral).where(Referral.exchange_id == exchange_id, Referral.sent_at.is_(None)).values(sent_at=at)
    ).rowcount
    ledger.update_exchange(session, exchange, state="delivered")
    members = _members(session, exchange_id)
    audit.record(
        session, "referral.list_sent", actor=actor, protocol=session.get(Protocol, exchange.protocol_id), exchange_id=exchange_id,
        file_hashes={"list": exchange.result_sha256}, counts={"families": len(members)}, subject_refs=_refs(members),
        message=f"referral list {exchange_id} delivered to the Sociaal Huis: {len(members)} families referred",
        fact_key=f"referral-list-sent:{exchange_id}",
    )
    return count
