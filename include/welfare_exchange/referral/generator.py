"""Synthetic referral candidates, consistent with the entitlement store in the project database.

Nothing here is real. The generator reads the loaded store — it does not re-create it from a
seed, so it agrees with whatever store is there (generated or imported, any version of the
entitlement generator):

* **Children.** The store's children born in the window (default: the 24 months before the
  store's youngest birth), with their own INSZ, birth date and domicile (``child.nis_code``).
* **Kansarmoede.** A child whose family had a *sociale toeslag* since its birth (asked through
  :func:`welfare_exchange.exchange.matching.match`, the store's public query) is in kansarmoede
  with probability 30 %, another child with 1.2 %: about 10 % of births, most but not all of
  them in families with a sociale toeslag (about nine in ten), as in Flanders. Such a family is
  flagged on 3–6 criteria (income nearly always when it has a sociale toeslag); another 5 % of
  children are candidates flagged on 1–2 criteria (not in kansarmoede, never selected).
* **Parent.** The child's *begunstigde* in the store when it has one (its INSZ, and its e-mail
  or postal address); else a made-up address in the child's municipality. Names are invented
  from syllables; phone numbers start with ``0000`` (no Belgian number does); e-mail addresses
  use the reserved ``example.org`` domain.
* **Consent.** 75 % gave consent within three months of the birth; 6 % of those withdrew it later.

The same store and ``seed`` give the same file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import SUPPLEMENTS, Beneficiary, Child
from welfare_exchange.municipalities import by_nis
from welfare_exchange.exchange.matching import match
from welfare_exchange.referral.candidates import REQUIRED_COLUMNS
from welfare_exchange.referral.criteria import CRITERIA

KANSARMOEDE_P_SOCIALE = 0.30
KANSARMOEDE_P_OTHER = 0.012
NEAR_P = 0.05
CONSENT_P = 0.75
WITHDRAW_P = 0.06
CRITERIA_COUNTS = ((3, 0.50), (4, 0.30), (5, 0.15), (6, 0.05))
INCOME_P_SOCIALE = 0.9
WINDOW_DAYS = 730
_SYLLABLES = ("ka", "ri", "lo", "me", "sa", "vo", "ne", "ta", "mi", "do", "ju", "le", "ro", "fa", "ze", "wi", "bo", "ha")
_STREETS = ("Kwetsel", "Biezen", "Oeverloop", "Wilgen", "Zavel", "Heiweg", "Brem", "Vlaskouter")
COLUMNS = REQUIRED_COLUMNS + ("parent_insz",)
_CHUNK = 5000


def _name(rng: random.Random) -> str:
    def word(parts: int) -> str:
        return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()

    return f"{word(2)} {rng.choice(('Van ', 'De ', ''))}{word(3)}"


def _criteria(rng: random.Random, count: int, sociale: bool) -> set[str]:
    flagged = {"income"} if rng.random() < (INCOME_P_SOCIALE if sociale else 0.5) else set()
    others = [name for name in CRITERIA if name not in flagged]
    rng.shuffle(others)
    return flagged | set(others[: max(count - len(flagged), 0)])


def _pick_count(rng: random.Random) -> int:
    roll, total = rng.random(), 0.0
    for count, share in CRITERIA_COUNTS:
        total += share
        if roll < total:
            return count
    return CRITERIA_COUNTS[-1][0]


def _contacts(session: Session, numbers: Sequence[str]) -> dict[str, tuple]:
    out = {}
    for start in range(0, len(numbers), _CHUNK):
        chunk = list(numbers[start : start + _CHUNK])
        query = sa.select(Beneficiary.insz, Beneficiary.email, Beneficiary.address_line, Beneficiary.postcode, Beneficiary.city)
        for number, *contact in session.execute(query.where(Beneficiary.insz.in_(chunk))):
            out[number] = tuple(contact)
    return out


def generate_candidates(
    session: Session,
    *,
    seed: int = 1,
    born_from: dt.date | None = None,
    born_until: dt.date | None = None,
    nis_codes: Sequence[str] | None = None,
) -> tuple[bytes, dict[str, int]]:
    """A candidate file (CSV bytes, the import format of :mod:`.candidates`) and its counts."""
    newest = session.scalar(sa.select(sa.func.max(Child.birth_date)))
    if newest is None:
        return _csv([]), {"children": 0, "candidates": 0}
    newest = newest if isinstance(newest, dt.date) else dt.date.fromisoformat(str(newest)[:10])
    until = born_until or newest
    since = born_from or until - dt.timedelta(days=WINDOW_DAYS)
    query = sa.select(Child.insz, Child.birth_date, Child.nis_code).where(Child.birth_date >= since, Child.birth_date <= until)
    if nis_codes:
        query = query.where(Child.nis_code.in_(list(nis_codes)))
    children = session.execute(query.order_by(Child.id)).all()
    numbers = [c.insz for c in children]
    parent_of: dict[str, str] = {}
    sociale: set[str] = set()
    for row in match(session, numbers, supplements=SUPPLEMENTS, reference_date=since, exchange_date=until):
        parent_of[row.child_insz] = row.beneficiary_insz  # the last (latest) pair wins
        if row.supplement == "sociale_toeslag":
            sociale.add(row.child_insz)
    contact_of = _contacts(session, sorted(set(parent_of.values())))
    rng = random.Random(seed)
    stats: Counter[str] = Counter(children=len(children))
    rows = []
    for number, born, nis in children:
        born = born if isinstance(born, dt.date) else dt.date.fromisoformat(str(born)[:10])
        roll, has_sociale = rng.random(), number in sociale
        p = KANSARMOEDE_P_SOCIALE if has_sociale else KANSARMOEDE_P_OTHER
        if roll < p:
            flagged = _criteria(rng, _pick_count(rng), has_sociale)
            stats["kansarmoede"] += 1
            stats["kansarmoede_with_sociale_toeslag"] += has_sociale
        elif roll < p + NEAR_P:
            flagged = _criteria(rng, rng.choice((1, 2)), has_sociale)
        else:
            continue
        rows.append(_row(rng, number, born, nis, flagged, parent_of.get(number), contact_of, stats, until))
    stats["candidates"] = len(rows)
    return _csv(rows), dict(stats)


def _row(rng, number, born, nis, flagged, parent, contact_of, stats, until: dt.date) -> list[str]:
    """One candidate line; consent and withdrawal only on or before ``until`` (the store's "today")."""
    email, address, postcode, city = contact_of.get(parent, (None, None, None, None)) if parent else (None,) * 4
    if not (email or address):
        municipality = by_nis(nis)
        address, postcode, city = f"{rng.choice(_STREETS)}straat {rng.randint(1, 200)}", municipality.postcode, municipality.name
    phone = f"0000 {rng.randint(0, 999999):06d}" if rng.random() < 0.8 else ""
    given = withdrawn = ""
    consent = born + dt.timedelta(days=rng.randint(7, 90)) if rng.random() < CONSENT_P else None
    if consent is not None and consent <= until:
        given = consent.isoformat()
        stats["with_consent"] += 1
        withdrawal = consent + dt.timedelta(days=rng.randint(1, 120)) if rng.random() < WITHDRAW_P else None
        if withdrawal is not None and withdrawal <= until:
            withdrawn = withdrawal.isoformat()
            stats["withdrawn"] += 1
    values = {
        "child_insz": number, "child_birth_date": born.isoformat(), "child_nis": nis, "parent_name": _name(rng),
        "parent_address_line": address or "", "parent_postcode": postcode or "", "parent_city": city or "",
        "parent_phone": phone, "parent_email": email or "", "consent_given_on": given, "consent_withdrawn_on": withdrawn,
        "parent_insz": parent or "",
        **{f"criterion_{name}": "1" if name in flagged else "0" for name in CRITERIA},
    }
    return [values[column] for column in COLUMNS]


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")
