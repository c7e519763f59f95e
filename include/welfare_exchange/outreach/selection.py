"""Which families a campaign contacts: one set-based query over the entitlement store.

A *family* here is a *begunstigde* (beneficiary, the parent who is paid): one message per
beneficiary, however many children. A beneficiary is selected when at least one child

* is domiciled in the protocol's municipality (``child.nis_code``; the store keeps the current
  domicile, which is the domicile on the reference date for a campaign run shortly after it),
* is within the protocol's age window on the reference date, and
* gave right, **on the reference date**, to a supplement the protocol covers (the *sociale
  toeslag*) paid to that beneficiary — the shared rule of
  :mod:`welfare_exchange.entitlements.periods`, over the store's current knowledge (or its
  knowledge at a given moment, :mod:`welfare_exchange.entitlements.history`).

The beneficiary's own address may lie elsewhere (co-parenting, a move): the message follows
the beneficiary's contact data, the selection follows the child's domicile.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import Beneficiary, Child, Entitlement
from welfare_exchange.entitlements import history, periods

EMAIL, LETTER, UNREACHABLE = "email", "letter", "unreachable"


@dataclass(frozen=True)
class Family:
    """One beneficiary to contact, with the contact data the message needs.

    ``channel`` is ``email`` when an e-mail address is known, else ``letter`` when a complete
    postal address is, else ``unreachable`` (counted, never contacted).
    """

    beneficiary_id: int
    insz: str
    email: str | None
    address_line: str | None
    postcode: str | None
    city: str | None

    @property
    def channel(self) -> str:
        if self.email:
            return EMAIL
        if self.address_line and self.postcode and self.city:
            return LETTER
        return UNREACHABLE

    def __repr__(self) -> str:  # a Family in a traceback must not show who it is
        return f"Family(beneficiary_id={self.beneficiary_id}, channel={self.channel})"


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def select_families(
    session: Session,
    *,
    nis_code: str,
    reference_date: dt.date,
    supplements: Sequence[str],
    age_min: int = 0,
    age_max: int = 25,
    known_at: dt.datetime | None = None,
) -> list[Family]:
    """The families to contact, ordered by beneficiary id (the same store gives the same list).

    One ``SELECT DISTINCT`` joining child → entitlement → beneficiary on indexed columns
    (``child.nis_code``, ``entitlement(child_id, supplement, start_date)``); nothing is read
    row by row or loaded whole.

    :param known_at: read the store as known at this moment; default its present knowledge.
    """
    born_by = _years_before(reference_date, age_min)  # at least age_min years old
    born_after = _years_before(reference_date, age_max + 1)  # not yet age_max + 1
    query = (
        sa.select(
            Beneficiary.id, Beneficiary.insz, Beneficiary.email, Beneficiary.address_line,
            Beneficiary.postcode, Beneficiary.city,
        )
        .distinct()
        .select_from(Child)
        .join(Entitlement, Entitlement.child_id == Child.id)
        .join(Beneficiary, Beneficiary.id == Entitlement.beneficiary_id)
        .where(
            Child.nis_code == nis_code,
            Child.birth_date <= born_by,
            Child.birth_date > born_after,
            Entitlement.supplement.in_(list(supplements)),
            periods.covers(Entitlement.start_date, Entitlement.end_date, reference_date),
            history.current() if known_at is None else history.known_at(known_at),
        )
        .order_by(Beneficiary.id)
    )
    return [Family(*row) for row in session.execute(query)]


def serialise(families: Sequence[Family]) -> bytes:
    """The selection as bytes, for the encrypted staging file (the campaign's frozen list)."""
    return json.dumps([asdict(f) for f in families], separators=(",", ":")).encode("utf-8")


def deserialise(data: bytes) -> list[Family]:
    return [Family(**row) for row in json.loads(data)]
