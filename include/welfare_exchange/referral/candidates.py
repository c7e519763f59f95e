"""The agency's referral source: Kind en Gezin's referral candidates, imported from a CSV file.

One line per child born in *kansarmoede* (or scored on the criteria), with the parent to contact
and the family's consent::

    child_insz,child_birth_date,child_nis,parent_name,parent_address_line,parent_postcode,parent_city,
    parent_phone,parent_email,criterion_income,criterion_education,criterion_stimulation,criterion_work,
    criterion_housing,criterion_health,consent_given_on,consent_withdrawn_on[,parent_insz]

(one header line, columns in any order; ``parent_insz`` optional). Criteria are ``1`` (flagged:
the family scores weak on it) or ``0``/empty; dates are ISO (YYYY-MM-DD). A file with any bad line
is refused whole — nothing is imported — and the refusal names the line numbers and what is wrong,
never a value.

What is kept is minimal: the child as a keyed reference (the audit trail's HMAC of its INSZ — the
INSZ itself is not stored), its birth month (not the day), its domicile, the criteria flagged, the
consent dates, the parent's INSZ as a keyed reference when given (only for subject access), and
the parent's contact details sealed with the staging key (:mod:`.contacts`).

Imports are upserts keyed on the child: a later file updates a family. A recorded withdrawal of
consent stands until a file gives a consent dated after it (a new consent): a line that merely
leaves the withdrawal date empty never turns a withdrawal back into consent. The same file
imported twice is recognised by its SHA-256 and changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit
from welfare_exchange import insz as insz_lib
from welfare_exchange.db.models import AuditRecord, ReferralCandidate
from welfare_exchange.municipalities import is_known
from welfare_exchange.errors import InputError
from welfare_exchange.referral import contacts
from welfare_exchange.referral.criteria import CRITERIA, in_kansarmoede, ordered

CRITERION_COLUMNS = tuple(f"criterion_{name}" for name in CRITERIA)
REQUIRED_COLUMNS = (
    "child_insz", "child_birth_date", "child_nis", "parent_name", "parent_address_line", "parent_postcode",
    "parent_city", "parent_phone", "parent_email", *CRITERION_COLUMNS, "consent_given_on", "consent_withdrawn_on",
)
OPTIONAL_COLUMNS = ("parent_insz",)
#: How many bad lines a refusal names (the count says how many there are in all).
MAX_REPORTED = 20
MAX_LENGTH = {"parent_name": 200, "parent_address_line": 250, "parent_city": 120, "parent_email": 250}
#: Data categories of the import, as the audit names them.
CATEGORIES = ["INSZ kind (gepseudonimiseerd)", "geboortemaand kind", "domicilie", "criteria kansarmoede",
              "toestemming", "naam en contactgegevens ouder"]

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_POSTCODE = re.compile(r"\d{4}")
_PHONE = re.compile(r"\+?[0-9 ./()\-]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FLAG = {"1": True, "0": False, "": False}


class CandidateImportRefused(InputError):
    """A candidate file with bad lines: nothing was imported; the message names the lines."""

    code = "referral_import_refused"

    def __init__(self, message: str, *, problems: Sequence[tuple[int, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True)
class Candidate:
    """One validated line. Holds personal data: its ``repr`` shows the line number only."""

    line: int
    child_insz: str
    birth_date: dt.date
    nis_code: str
    contact: contacts.Contact
    criteria: tuple[str, ...]
    consent_given_on: dt.date | None
    consent_withdrawn_on: dt.date | None
    parent_insz: str | None

    def __repr__(self) -> str:
        return f"Candidate(line={self.line})"


@dataclass
class ImportSummary:
    """What an import did, in counts (what the CLI prints and the audit records)."""

    sha256: str
    rows: int = 0
    new: int = 0
    updated: int = 0
    with_consent: int = 0
    withdrawn: int = 0
    withdrawals_kept: int = 0
    kansarmoede: int = 0
    already_imported: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows, "new": self.new, "updated": self.updated, "with_consent": self.with_consent,
            "withdrawn": self.withdrawn, "withdrawals_kept": self.withdrawals_kept, "kansarmoede": self.kansarmoede,
        }


@dataclass
class _Parsed:
    sha256: str
    candidates: list[Candidate] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


def parse(data: bytes, *, today: dt.date) -> list[Candidate]:
    """Validate a whole candidate file; the candidates, or :class:`CandidateImportRefused`."""
    parsed = _parse(data, today)
    if parsed.problems:
        raise CandidateImportRefused(_refusal_message(parsed.problems), problems=parsed.problems)
    return parsed.candidates


def _parse(data: bytes, today: dt.date) -> _Parsed:
    parsed = _Parsed(sha256=hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")  # Excel writes a BOM
    except UnicodeDecodeError:
        raise InputError("the candidate file is not UTF-8 text: save it as CSV UTF-8 and import it again") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        columns = _header(reader)
        seen: dict[str, int] = {}
        for record in reader:
            if not record or all(not value.strip() for value in record):
                continue  # blank lines are layout
            line = reader.line_num
            if len(record) != len(columns):
                parsed.problems.append((line, f"has {len(record)} fields, the header has {len(columns)}"))
                continue
            candidate, problem = _candidate(line, dict(zip(columns, (v.strip() for v in record))), today)
            if problem is None and candidate.child_insz in seen:
                problem = f"names the same child as line {seen[candidate.child_insz]}"
            if problem is not None:
                parsed.problems.append((line, problem))
                continue
            seen[candidate.child_insz] = line
            parsed.candidates.append(candidate)
    except csv.Error:
        # csv's message can quote the offending text: say only where it happened.
        parsed.problems.append((reader.line_num, "is not valid CSV (unbalanced quotes?)"))
    if not parsed.candidates and not parsed.problems:
        raise InputError("the candidate file holds no candidates (only a header): nothing to import")
    return parsed


def _header(reader: Iterator[list[str]]) -> list[str]:
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InputError("the candidate file is empty: expected a header line " + ",".join(REQUIRED_COLUMNS)) from None
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    # Column names are not echoed: a header cell may hold anything (a note, a name).
    unknown = [str(i) for i, name in enumerate(header, start=1) if name not in known]
    if unknown:
        raise InputError(
            f"column(s) {', '.join(unknown)} of the candidate file's header are not referral columns: the import takes "
            f"only {','.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)} (notes behind a criterion are never imported)"
        )
    if len(set(header)) != len(header):
        raise InputError("the candidate file's header names a column twice")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise InputError(f"the candidate file's header lacks the column(s) {', '.join(missing)}")
    return header


def _date(values: dict[str, str], name: str) -> tuple[dt.date | None, str | None]:
    text = values[name]
    if not text:
        return None, None
    try:
        if _ISO_DATE.fullmatch(text):
            return dt.date.fromisoformat(text), None
    except ValueError:
        pass
    return None, f"{name} is not a date in YYYY-MM-DD form"


def _insz(values: dict[str, str], name: str) -> tuple[str | None, str | None]:
    number = insz_lib.normalise(values[name])
    if not number:
        return None, f"{name} is empty"
    if not (number.isdigit() and len(number) == 11):
        return None, f"{name} is not 11 digits (a spreadsheet may have dropped a leading 0)"
    if not insz_lib.is_valid(number):
        return None, f"{name} is not a valid INSZ (check digits or date part wrong)"
    return number, None


def _candidate(line: int, values: dict[str, str], today: dt.date) -> tuple[Candidate | None, str | None]:
    """One line checked; ``(candidate, None)`` or ``(None, reason)`` — the reason never quotes a value."""
    child, problem = _insz(values, "child_insz")
    if problem:
        return None, problem
    born, problem = _date(values, "child_birth_date")
    if problem or born is None:
        return None, problem or "child_birth_date is empty"
    carried = insz_lib.birth_date(child)
    if carried is not None and carried != born:
        return None, "child_birth_date does not match the birth date in child_insz"
    if born > today:
        return None, "child_birth_date lies in the future"
    if not is_known(values["child_nis"]):
        return None, "child_nis is not the NIS code of a Flemish municipality"
    parent = None
    if values.get("parent_insz"):
        parent, problem = _insz(values, "parent_insz")
        if problem:
            return None, problem
        if parent == child:
            return None, "parent_insz is the child's own number"
    contact, problem = _contact(values)
    if problem:
        return None, problem
    criteria = []
    for name, column in zip(CRITERIA, CRITERION_COLUMNS):
        flag = _FLAG.get(values[column])
        if flag is None:
            return None, f"{column} must be 1 (flagged) or 0 / empty (not flagged)"
        if flag:
            criteria.append(name)
    given, problem = _date(values, "consent_given_on")
    if problem:
        return None, problem
    withdrawn, problem = _date(values, "consent_withdrawn_on")
    if problem:
        return None, problem
    if given is not None and given > today:
        return None, "consent_given_on lies in the future"
    if withdrawn is not None:
        if given is None:
            return None, "consent_withdrawn_on is given but consent_given_on is empty"
        if withdrawn < given:
            return None, "consent_withdrawn_on lies before consent_given_on"
        if withdrawn > today:
            return None, "consent_withdrawn_on lies in the future"
    return Candidate(
        line=line, child_insz=child, birth_date=born, nis_code=values["child_nis"], contact=contact,
        criteria=tuple(ordered(criteria)), consent_given_on=given, consent_withdrawn_on=withdrawn, parent_insz=parent,
    ), None


def _contact(values: dict[str, str]) -> tuple[contacts.Contact | None, str | None]:
    for name, limit in MAX_LENGTH.items():
        if len(values[name]) > limit:
            return None, f"{name} is longer than {limit} characters"
    for name in ("parent_name", "parent_address_line", "parent_postcode", "parent_city", "parent_phone", "parent_email"):
        if _CONTROL.search(values[name]):
            return None, f"{name} contains control characters"
    if not values["parent_name"]:
        return None, "parent_name is empty: a referral names the parent to contact"
    address = [values[n] for n in ("parent_address_line", "parent_postcode", "parent_city")]
    if any(address) and not all(address):
        return None, "the parent's address is incomplete: give parent_address_line, parent_postcode and parent_city, or none"
    if values["parent_postcode"] and not _POSTCODE.fullmatch(values["parent_postcode"]):
        return None, "parent_postcode is not a 4-digit Belgian postcode"
    phone = values["parent_phone"]
    if phone and not (_PHONE.fullmatch(phone) and 8 <= sum(c.isdigit() for c in phone) <= 15):
        return None, "parent_phone is not a phone number (8 to 15 digits, optionally +, spaces, dots, slashes)"
    if values["parent_email"] and not _EMAIL.fullmatch(values["parent_email"]):
        return None, "parent_email is not an e-mail address"
    if not (all(address) or phone or values["parent_email"]):
        return None, "no way to contact the parent: give an address, a phone number or an e-mail address"
    return contacts.Contact(
        name=values["parent_name"], address_line=values["parent_address_line"] or None,
        postcode=values["parent_postcode"] or None, city=values["parent_city"] or None,
        phone=phone or None, email=values["parent_email"] or None,
    ), None


def _refusal_message(problems: Sequence[tuple[int, str]]) -> str:
    shown = "; ".join(f"line {line}: {reason}" for line, reason in problems[:MAX_REPORTED])
    more = len(problems) - MAX_REPORTED
    return (
        f"candidate import refused, nothing was imported: {len(problems)} bad line{'s' if len(problems) != 1 else ''} "
        f"— {shown}{f'; and {more} more' if more > 0 else ''}. Correct the file and import it again."
    )


def merge_consent(
    old: tuple[dt.date | None, dt.date | None], new: tuple[dt.date | None, dt.date | None]
) -> tuple[tuple[dt.date | None, dt.date | None], bool]:
    """The consent dates ``(given, withdrawn)`` after an import line, and whether a withdrawal was kept.

    A withdrawal already recorded stands unless the new line gives a consent dated after it.
    """
    (old_given, old_withdrawn), (new_given, new_withdrawn) = old, new
    if old_withdrawn is not None and new_withdrawn is None and not (new_given and new_given > old_withdrawn):
        return (old_given, old_withdrawn), True
    return (new_given, new_withdrawn), False


def store(session: Session, candidates: Sequence[Candidate], *, sha256: str, actor: audit.Actor) -> ImportSummary:
    """Upsert validated candidates, keyed on the child's keyed reference; audited once per file."""
    summary = ImportSummary(sha256=sha256, rows=len(candidates))
    fact_key = f"referral-import:{sha256}"
    if session.scalar(sa.select(AuditRecord.id).where(AuditRecord.fact_key == fact_key)) is not None:
        summary.already_imported = True
        return summary
    refs = {c.child_insz: audit.subject_key(c.child_insz) for c in candidates}
    existing: dict[bytes, ReferralCandidate] = {}
    keys = list(refs.values())
    for start in range(0, len(keys), 1000):
        for row in session.scalars(sa.select(ReferralCandidate).where(ReferralCandidate.family_ref.in_(keys[start : start + 1000]))):
            existing[bytes(row.family_ref)] = row
    for c in candidates:
        ref = refs[c.child_insz]
        row = existing.get(ref)
        if row is None:
            row = ReferralCandidate(family_ref=ref)
            session.add(row)
            (given, withdrawn), kept = (c.consent_given_on, c.consent_withdrawn_on), False
            summary.new += 1
        else:
            (given, withdrawn), kept = merge_consent(
                (row.consent_given_on, row.consent_withdrawn_on), (c.consent_given_on, c.consent_withdrawn_on)
            )
            summary.updated += 1
        row.parent_ref = audit.subject_key(c.parent_insz) if c.parent_insz else None
        row.birth_month = c.birth_date.strftime("%Y-%m")
        row.nis_code = c.nis_code
        row.criteria = list(c.criteria)
        row.criteria_count = len(c.criteria)
        row.contact_sealed = contacts.seal(c.contact)
        row.consent_given_on, row.consent_withdrawn_on = given, withdrawn
        row.source_sha256 = sha256
        summary.withdrawals_kept += kept
        summary.withdrawn += withdrawn is not None
        summary.with_consent += given is not None and withdrawn is None
        summary.kansarmoede += in_kansarmoede(c.criteria)
    session.flush()
    audit.record(
        session, "referral.candidates_imported", actor=actor, data_categories=CATEGORIES,
        file_hashes={"import": sha256}, counts=summary.counts(),
        subjects=[c.child_insz for c in candidates] + [c.parent_insz for c in candidates if c.parent_insz],
        message=f"{summary.rows} referral candidate(s) imported ({summary.new} new, {summary.updated} updated)",
        fact_key=fact_key,
    )
    return summary


def import_candidates(session: Session, data: bytes, *, today: dt.date, actor: audit.Actor) -> ImportSummary:
    """Validate and store a candidate file (bytes); a bad file raises :class:`CandidateImportRefused`
    before anything is written (the caller records the refusal: :func:`record_refusal`)."""
    return store(session, parse(data, today=today), sha256=hashlib.sha256(data).hexdigest(), actor=actor)


def record_refusal(session: Session, data: bytes, err: InputError, *, actor: audit.Actor) -> None:
    """The refused import as an audit fact: the file's hash and how many lines were bad, no values."""
    problems = getattr(err, "problems", [])
    audit.record(
        session, "referral.candidates_imported", "refused", actor=actor,
        file_hashes={"import": hashlib.sha256(data).hexdigest()}, counts={"bad_lines": len(problems)},
        message=str(err) if problems else f"candidate import refused: {err}",
    )
