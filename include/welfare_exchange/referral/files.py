"""The encrypted files a referral exchange sends, built once and kept until they are delivered.

A referral list and a withdrawal notice are workbooks encrypted with the protocol's key (the
password the two DPOs agreed; Agile encryption, AES-256, as Method 1 results are). Encryption
draws a fresh salt, so building twice would give different bytes: each file is built once, kept
in the exchange's staging folder — sealed with the staging key on top, so staging holds nothing
a workbook reader could open — and its SHA-256 is the exchange's ``result_sha256``. A re-run gets
those same bytes back; a staged copy that does not match the ledger's hash is never handed out.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from welfare_exchange import ledger, xlsx
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.intake import encrypt_agile
from welfare_exchange.staging import Staging

AUTHOR = "Opgroeien / Kind en Gezin"
CONFIDENTIAL = "Vertrouwelijk: persoonsgegevens onder beroepsgeheim. Enkel voor het doel in de samenwerkingsovereenkomst."


@dataclass(frozen=True)
class BuiltFile:
    """An encrypted file ready for delivery: the exchange it belongs to, its name and bytes."""

    exchange_id: int
    name: str
    data: bytes
    sha256: str
    rows: int

    def __repr__(self) -> str:
        return f"BuiltFile(exchange_id={self.exchange_id}, name={self.name!r}, rows={self.rows}, sha256={self.sha256[:12]})"


def workbook(protocol: Protocol, on: dt.date, title: str) -> xlsx.Workbook:
    """An empty workbook with the document properties every referral file carries (fixed date)."""
    return xlsx.Workbook(
        xlsx.Properties(
            created=dt.datetime.combine(on, dt.time(0, 0)),
            title=title,
            subject=f"Protocol {protocol.id}, samenwerkingsovereenkomst {protocol.agreement_ref}",
            author=AUTHOR,
            company="Opgroeien",
            comments=CONFIDENTIAL,
        )
    )


def agreement_lines(protocol: Protocol) -> list[tuple[str, str]]:
    """The Info-sheet lines naming the Sociaal Huis and the agreement the file travels under."""
    return [
        ("Sociaal Huis", f"{protocol.municipality} (NIS {protocol.nis_code})"),
        ("Protocol", str(protocol.id)),
        ("Samenwerkingsovereenkomst", f"{protocol.agreement_ref} van {protocol.agreement_date.isoformat()}"),
        ("Beroepsgeheim", protocol.secrecy_conditions or ""),
        ("Rechtsgrond", protocol.legal_basis),
        ("Doel (doelbinding)", protocol.purpose),
    ]


def staged(exchange: Exchange, name: str) -> BuiltFile | None:
    """The file built earlier for this exchange, when staging still holds it with the ledger's hash."""
    staging = Staging(exchange.protocol_id, exchange.id)
    if not exchange.result_sha256 or not staging.has(name):
        return None
    data = staging.read_encrypted(name)
    if hashlib.sha256(data).hexdigest() != exchange.result_sha256:
        return None
    return BuiltFile(exchange.id, name, data, exchange.result_sha256, int((exchange.counts or {}).get("rows", 0)))


def delivery_begun(session: Session, exchange: Exchange, key: str) -> bool:
    """True once the file's delivery was begun (its side effect is in the ledger) or done: from
    then on its bytes are fixed, as they may have reached the Sociaal Huis."""
    return exchange.state == "delivered" or ledger.find_side_effect(session, key) is not None


def build_once(
    session: Session,
    exchange: Exchange,
    name: str,
    render: Callable[[], tuple[bytes, int]],
    password: str,
    *,
    rebuild: bool = False,
) -> BuiltFile:
    """The exchange's encrypted file: the staged one, or ``render()`` encrypted, staged and recorded.

    :param render: gives the plaintext xlsx (kept in memory only) and its row count.
    :param rebuild: build again even when a file is staged (the list lost a family before delivery).
    """
    existing = None if rebuild else staged(exchange, name)
    if existing is not None:
        return existing
    plain, rows = render()
    data = encrypt_agile(plain, password)
    del plain
    Staging(exchange.protocol_id, exchange.id).write_encrypted(name, data)
    digest = hashlib.sha256(data).hexdigest()
    ledger.update_exchange(session, exchange, state="built", result_sha256=digest, counts={"rows": rows})
    return BuiltFile(exchange.id, name, data, digest, rows)


def open_exchange(session: Session, protocol: Protocol, key: str, name: str, on: dt.date, actor) -> tuple[Exchange, bool]:
    """The ledger exchange of one file the agency sends (keyed on ``key``, e.g. protocol and date)."""
    return ledger.open_exchange(
        session, protocol, request_sha256=hashlib.sha256(key.encode()).hexdigest(), request_name=name,
        request_size=None, dag_id=actor.dag_id, run_id=actor.run_id, exchange_date=on,
    )


def schedule_retention(session: Session, protocol: Protocol, exchange: Exchange) -> dt.date:
    """Record when the exchange's staged file must be gone (the protocol's result retention after
    its date); the retention run deletes it and certifies the deletion. Returns the deadline."""
    deadline, rule = ledger.result_deadline(protocol, exchange.exchange_date, what="referral file", after="it was built")
    staging = Staging(protocol.id, exchange.id)
    ledger.schedule_deletion(
        session, protocol_id=protocol.id, exchange_id=exchange.id, kind="staging", where=staging.where,
        location=staging.location(), deadline=deadline, rule=rule,
    )
    return deadline
