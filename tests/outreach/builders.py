"""A small synthetic store for Method 2 tests, and the independent expectation of who is contacted.

Every family case the selection must get right: a sociale toeslag on the reference date
(ongoing, ending later, starting that very day), one that ended before or starts after it,
another supplement only, a child domiciled elsewhere, a child too old, a beneficiary with
several children (one message), a beneficiary changed before the reference date (only the new
one), a beneficiary with children in two municipalities. Contacts: ``@example.org`` e-mail,
invented addresses, some with neither, some at ``bounce.invalid`` (the test SMTP server
refuses those for good).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from welfare_exchange import insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Beneficiary, Child, Entitlement

REFERENCE = dt.date(2026, 10, 1)
OFFER = {
    "title": "Gratis vrijetijdspas voor uw kinderen",
    "what": "Met de vrijetijdspas aan kansentarief betaalt uw gezin maar 20 % voor sport, cultuur en "
    "jeugdwerk in Testgemeente — ook voor de speelpleinwerking en de zwembaden (€ 1,50 per beurt).",
    "how_to_apply": "Vraag de pas aan aan het onthaal van het Sociaal Huis, met uw identiteitskaart. "
    "U hoeft geen bewijs van uw inkomen mee te brengen.",
    "contact": {"organisation": "Sociaal Huis Testgemeente", "email": "vrijetijdspas@testgemeente.example",
                "phone": "09 123 45 67", "address": "Marktplein 1, 9999 Testgemeente"},
    "link": "https://www.testgemeente.example/vrijetijdspas",
    "valid_from": "2026-10-15",
    "valid_until": "2027-06-30",
    "reference_date": REFERENCE.isoformat(),
}


@dataclass
class Store:
    nis: str
    #: beneficiary id → (insz, email, address_line, postcode, city)
    beneficiaries: dict[int, tuple] = field(default_factory=dict)
    #: beneficiary ids that must be contacted
    expected: set[int] = field(default_factory=set)

    def channel(self, beneficiary_id: int) -> str:
        _, email, line, postcode, city = self.beneficiaries[beneficiary_id]
        return "email" if email else "letter" if line and postcode and city else "unreachable"

    def expected_by(self, channel: str) -> set[int]:
        return {b for b in self.expected if self.channel(b) == channel}

    def email_of(self, beneficiary_id: int) -> str:
        return self.beneficiaries[beneficiary_id][1]

    def personal_strings(self) -> list[str]:
        """Everything that identifies a person in this store (for the no-leak checks)."""
        out = []
        for number, email, line, _, _ in self.beneficiaries.values():
            out += [number] + [v for v in (email, line) if v]
        return out


def build_store(nis: str, *, families: int = 40, seed: int = 7, other_nis: str = "99999") -> Store:
    """``families`` qualifying families plus distractors, written to the project database."""
    rng = random.Random(seed)
    store = Store(nis)
    serial = iter(range(1, 999))
    used_days: dict[dt.date, int] = {}

    def number(born: dt.date) -> str:
        used_days[born] = used_days.get(born, 0) + 1
        return insz.make(born, used_days[born])

    with session_scope() as session:

        def beneficiary(contact: str) -> Beneficiary:
            born = dt.date(1980, 1, 1) + dt.timedelta(days=rng.randrange(6000))
            n = next(serial)
            row = Beneficiary(insz=number(born))
            if contact == "email":
                row.email = f"ouder{n}@example.org"
            elif contact == "bounce":
                row.email = f"ouder{n}@bounce.invalid"
            elif contact == "letter":
                row.address_line, row.postcode, row.city = f"Proefstraat {n}", "9999", "Testgemeente"
            session.add(row)
            session.flush()
            store.beneficiaries[row.id] = (row.insz, row.email, row.address_line, row.postcode, row.city)
            return row

        def child(nis_code: str, born: dt.date | None = None) -> Child:
            born = born or dt.date(2010, 1, 1) + dt.timedelta(days=rng.randrange(5000))
            row = Child(insz=number(born), birth_date=born, nis_code=nis_code)
            session.add(row)
            session.flush()
            return row

        def entitle(c: Child, b: Beneficiary, start: dt.date, end: dt.date | None, supplement="sociale_toeslag"):
            session.add(Entitlement(child_id=c.id, beneficiary_id=b.id, supplement=supplement, start_date=start, end_date=end))

        # Qualifying families: ~60 % e-mail, ~30 % letter, a few bounce or have no contact.
        for i in range(families):
            contact = "bounce" if i % 13 == 5 else "none" if i % 17 == 3 else "email" if rng.random() < 0.65 else "letter"
            b = beneficiary(contact)
            start = REFERENCE - dt.timedelta(days=rng.randrange(0, 2000))
            end = None if rng.random() < 0.6 else REFERENCE + dt.timedelta(days=rng.randrange(0, 400))
            entitle(child(nis), b, start, end)
            if i % 5 == 0:  # a sibling: still one message
                entitle(child(nis), b, start, end)
            if i % 7 == 0:  # a child in another municipality too: irrelevant, still one message
                entitle(child(other_nis), b, start, None)
            store.expected.add(b.id)

        # Edge: entitlement starting exactly on the reference date, one ending exactly on it.
        for start, end in ((REFERENCE, None), (REFERENCE - dt.timedelta(days=300), REFERENCE)):
            b = beneficiary("email")
            entitle(child(nis), b, start, end)
            store.expected.add(b.id)

        # Not contacted.
        b = beneficiary("email")  # ended the day before the reference date
        entitle(child(nis), b, dt.date(2022, 1, 1), REFERENCE - dt.timedelta(days=1))
        b = beneficiary("letter")  # starts after the reference date
        entitle(child(nis), b, REFERENCE + dt.timedelta(days=1), None)
        b = beneficiary("email")  # another supplement only
        entitle(child(nis), b, dt.date(2022, 1, 1), None, supplement="zorgtoeslag")
        b = beneficiary("email")  # child domiciled elsewhere
        entitle(child(other_nis), b, dt.date(2022, 1, 1), None)
        b = beneficiary("letter")  # child 26 on the reference date
        entitle(child(nis, born=dt.date(2000, 5, 5)), b, dt.date(2022, 1, 1), None)
        # Beneficiary changed before the reference date: only the new one is contacted.
        old, new = beneficiary("email"), beneficiary("letter")
        kid = child(nis)
        entitle(kid, old, dt.date(2021, 1, 1), dt.date(2024, 12, 31))
        entitle(kid, new, dt.date(2025, 1, 1), None)
        store.expected.add(new.id)
    return store
