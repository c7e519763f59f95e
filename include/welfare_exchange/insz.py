"""INSZ numbers: the Belgian social-security identification number.

An INSZ (*identificatienummer van de sociale zekerheid*) is either a national-register number
(NN, *rijksregisternummer*) or a BIS number. Eleven digits: ``YYMMDD`` birth date, a 3-digit
serial, and two check digits ``97 - (n mod 97)`` where ``n`` is the first nine digits — for
births from 2000 on, ``n`` is prefixed with ``2``. BIS numbers add 20 (sex unknown) or 40
(sex known) to the month.

Validation is python-stdnum's (``stdnum.be.ssn``); this module adds what the exchange needs on
top: normalisation of the ways spreadsheets write the number, the birth date with the right
century, generation of synthetic numbers, and a detector for INSZ-shaped text (the log scanner).
"""

from __future__ import annotations

import datetime as dt
import re

from stdnum.be import bis as _bis
from stdnum.be import nn as _nn
from stdnum.be import ssn as _ssn
from stdnum.exceptions import ValidationError

_SEPARATORS = re.compile(r"[\s.\-/_]")
#: Text that looks like an INSZ: 11 digits, bare or written as ``YY.MM.DD-SSS.CC``. Letters
#: count as boundaries too, so digit runs inside hex digests are not taken for numbers.
INSZ_SHAPED = re.compile(
    r"(?<![0-9A-Za-z])(\d{2}[.\s]?\d{2}[.\s]?\d{2}[\s\-.]?\d{3}[.\s]?\d{2})(?![0-9A-Za-z])"
)


def normalise(raw: object) -> str:
    """Strip the separators people and spreadsheets put in an INSZ.

    ``"YY.MM.DD-SSS.CC"``, ``"YYMMDD SSS CC"`` and ``"YYMMDDSSSCC"`` all become
    ``"YYMMDDSSSCC"`` (no real number is written in this repository, not even in a docstring). Returns the cleaned text even when it is not 11 digits; validation
    decides what it is.
    """
    text = "" if raw is None else str(raw).strip()
    return _SEPARATORS.sub("", text)


def check_digits(first_nine: str, born_2000_or_later: bool) -> str:
    """The two check digits for the first nine digits under the 1900 or 2000 rule."""
    n = int(("2" if born_2000_or_later else "") + first_nine)
    return f"{97 - n % 97:02d}"


def is_valid(number: str) -> bool:
    """True when ``number`` (11 digits, normalised) is a valid NN or BIS number."""
    return _ssn.is_valid(number)


def kind(number: str) -> str | None:
    """``"nn"``, ``"bis"`` or ``None`` for an invalid number."""
    try:
        return _ssn.guess_type(_ssn.validate(number))
    except ValidationError:
        return None


def birth_date(number: str) -> dt.date | None:
    """Birth date with the century the check digits prove; ``None`` when unknown or invalid.

    stdnum tries the 1900 rule first, so a number's century is decided by which rule its
    check digits satisfy; numbers with an unknown birth date (month or day 00) give ``None``.
    """
    try:
        number = _ssn.validate(number)
        module = _bis if _ssn.guess_type(number) == "bis" else _nn
        return module.get_birth_date(number)
    except (ValidationError, ValueError):
        return None


def age_on(number: str, on: dt.date) -> int | None:
    """Age in whole years on ``on``; ``None`` when the birth date is unknown."""
    born = birth_date(number)
    if born is None:
        return None
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def make(born: dt.date, serial: int, *, bis: bool = False, sex_known: bool = True) -> str:
    """Build a checksum-valid synthetic INSZ for a birth date and a serial (1..998).

    Used only by the data generator and tests: synthetic numbers never belong to anyone we
    exchange with, but are valid so that they exercise the real validation.
    """
    if not 1 <= serial <= 998:
        raise ValueError("serial must be between 1 and 998")
    month = born.month + ((40 if sex_known else 20) if bis else 0)
    first_nine = f"{born.year % 100:02d}{month:02d}{born.day:02d}{serial:03d}"
    return first_nine + check_digits(first_nine, born.year >= 2000)


def find_insz_shaped(text: str) -> list[str]:
    """Every checksum-valid INSZ in ``text``, whatever its separators.

    The log scanner uses this: an 11-digit run that is also a valid INSZ is personal data.
    """
    hits = []
    for match in INSZ_SHAPED.finditer(text):
        candidate = normalise(match.group(1))
        if len(candidate) == 11 and is_valid(candidate):
            hits.append(candidate)
    return hits


def redact(text: str, placeholder: str = "[INSZ]") -> str:
    """``text`` with every valid INSZ replaced by ``placeholder``, the rest kept.

    For names that come from outside — a request file a municipality named after a child —
    before they go into a log line, an exception or an audit message.
    """
    return INSZ_SHAPED.sub(lambda m: placeholder if find_insz_shaped(m.group(0)) else m.group(0), text)
