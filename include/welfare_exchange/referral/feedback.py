"""Feedback from the Sociaal Huis: per referral, what came of it — validated like a request.

The Sociaal Huis returns, over the agreement's channel, a workbook encrypted with the agreed
password: one row per referral with its referral id (``Doorverwijzingsnummer``), the outcome
(``Resultaat``: gecontacteerd / contacted, ondersteuning gestart / support started, geweigerd /
declined, onbereikbaar / unreachable, verhuisd / moved) and the date (``Datum``).
:func:`feedback_template` makes the workbook it fills in.

:func:`read_feedback` decrypts it in memory (the password verified first, as intake does), finds
the three columns and checks every row: the referral id must be one this Sociaal Huis received
under this agreement, the outcome one of the five, the date not in the future nor before the
referral was sent. Any bad row refuses the whole file (:class:`FeedbackRefused`, a ``code`` and
the line numbers per reason — never a value), so nothing is recorded half.
:func:`receive_feedback` opens the file's exchange (keyed on its SHA-256: the same file again is
a duplicate), and records the outcomes or the refusal, audited. An outcome already recorded
(same referral, outcome and date) is not recorded twice; a later outcome adds to the history.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from python_calamine import CalamineWorkbook, SheetTypeEnum
from sqlalchemy.orm import Session

from welfare_exchange import audit, ledger, xlsx
from welfare_exchange.db.models import Exchange, Protocol, Referral, ReferralFeedback
from welfare_exchange.errors import InputError
from welfare_exchange.intake import IntakeError, IntakeLimits
from welfare_exchange.intake.columns import header_key
from welfare_exchange.intake.decrypt import check_zip, decrypt, detect_encryption
from welfare_exchange.referral.selection import require_gate

#: outcome → its Dutch label (what the template lists and the evaluation report shows).
OUTCOMES = {
    "contacted": "gecontacteerd",
    "support_started": "ondersteuning gestart",
    "declined": "geweigerd",
    "unreachable": "onbereikbaar",
    "moved": "verhuisd",
}
#: Accepted spellings (after :func:`header_key`): the key, its English words, the Dutch label.
_OUTCOME_KEYS = {header_key(text): key for key, label in OUTCOMES.items() for text in (key, key.replace("_", " "), label)}
#: The template's headings, and the other headings recognised for each column.
HEADINGS = {"code": "Doorverwijzingsnummer", "outcome": "Resultaat", "date": "Datum"}
_HEADING_KEYS = {
    "code": {"doorverwijzingsnummer", "doorverwijzing", "referralid", "referral"},
    "outcome": {"resultaat", "outcome", "uitkomst"},
    "date": {"datum", "date", "datumresultaat"},
}
_HEADER_SCAN_ROWS = 20
CATEGORIES = ["doorverwijzingsnummer", "resultaat doorverwijzing", "datum resultaat"]

#: Refusal code → what the Sociaal Huis (and the operator) can do about it. Fixed text, no values.
MESSAGES = {
    "wrong_password": "the password does not open the feedback file: use the password agreed between the DPOs for this agreement",
    "not_encrypted": "the feedback file is not password-protected: save it again with the agreed password and send it again",
    "not_excel": "the feedback file is not an Excel workbook (.xlsx or .xls): fill in the feedback template and send it again",
    "corrupt": "the feedback file is damaged or incomplete: send it again",
    "unsupported_encryption": "the feedback file uses an encryption this service cannot open: save it as .xlsx with a password",
    "too_large": "the feedback file is larger than this service accepts: check the file",
    "too_many_rows": "the feedback file has more rows than this service accepts: check the file",
    "zip_bomb": "the feedback file unpacks to far more data than feedback can hold and was refused as unsafe",
    "missing_columns": (
        "the feedback file has no sheet with the columns Doorverwijzingsnummer, Resultaat and Datum: fill in the "
        "feedback template and send it again"
    ),
    "ambiguous_sheet": "the feedback file has more than one sheet with feedback columns: keep one sheet",
    "empty": "the feedback file holds no feedback rows: fill in one row per referral",
    "unknown_referral": "referral id unknown: not a referral this Sociaal Huis received under this agreement",
    "bad_outcome": "outcome not one of " + ", ".join(f"{label} ({key.replace('_', ' ')})" for key, label in OUTCOMES.items()),
    "bad_date": "date missing, not a date (YYYY-MM-DD), in the future or before the referral was sent",
    "conflicting_rows": "the same referral id appears again with another outcome or date: keep one row per referral",
}
#: Row-level reasons, in the order a refusal names them (the first present is its code).
ROW_REASONS = ("unknown_referral", "bad_outcome", "bad_date", "conflicting_rows")


class FeedbackRefused(InputError):
    """A feedback file that cannot be recorded; ``code`` says why, ``lines`` which rows (per reason)."""

    code = "feedback"

    def __init__(self, code: str, lines: Mapping[str, Sequence[int]] | None = None) -> None:
        self.lines = {reason: list(rows) for reason, rows in (lines or {}).items() if rows}
        if self.lines:
            parts = "; ".join(f"{MESSAGES[r]} on line(s) {_line_list(self.lines[r])}" for r in ROW_REASONS if r in self.lines)
            message = f"feedback file refused, nothing was recorded: {parts}. Correct the file and send it again."
        else:
            message = f"feedback file refused, nothing was recorded: {MESSAGES[code]}"
        super().__init__(message, code=code)


def _line_list(lines: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


@dataclass(frozen=True)
class FeedbackRow:
    """One outcome as read: the referral id, the outcome key and its date (``line`` in the file)."""

    line: int
    code: str
    outcome: str
    date: dt.date


@dataclass
class FeedbackOutcome:
    """A validated feedback file: its rows (one per referral) and the lines repeating one exactly."""

    rows: list[FeedbackRow] = field(default_factory=list)
    duplicate_lines: list[int] = field(default_factory=list)


@dataclass
class FeedbackResult:
    """What :func:`receive_feedback` did with a file (counts only)."""

    exchange_id: int
    duplicate_of: int | None = None
    refused: FeedbackRefused | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _decrypted(data: bytes, password: str | None, limits: IntakeLimits) -> bytes:
    if not data:
        raise FeedbackRefused("not_excel")
    if len(data) > limits.max_file_bytes:
        raise FeedbackRefused("too_large")
    try:
        encryption = detect_encryption(data)
        if encryption is None:
            raise FeedbackRefused("not_encrypted")
        plain = decrypt(data, password, encryption)
        if plain[:4] == b"PK\x03\x04":
            check_zip(plain, max_bytes=limits.max_decompressed_bytes, max_ratio=limits.max_compression_ratio,
                      max_members=limits.max_zip_members)
    except IntakeError as exc:  # the request's codes, told in the feedback's words
        raise FeedbackRefused(exc.code if exc.code in MESSAGES else "corrupt") from None
    return plain


def _sheet_rows(plain: bytes, limits: IntakeLimits) -> tuple[list, dict[str, int], int]:
    """The one sheet with the three feedback columns: its rows, the column of each, the header's index."""
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(plain))
    except Exception:
        raise FeedbackRefused("corrupt") from None
    found = []
    try:
        for meta in workbook.sheets_metadata:
            if meta.typ != SheetTypeEnum.WorkSheet:
                continue
            try:
                sheet = workbook.get_sheet_by_name(meta.name)
                if sheet.end is not None and sheet.end[0] + 1 > limits.max_rows + _HEADER_SCAN_ROWS:
                    raise FeedbackRefused("too_many_rows")
                rows = sheet.to_python(skip_empty_area=False)
            except FeedbackRefused:
                raise
            except Exception:
                raise FeedbackRefused("corrupt") from None
            for index, row in enumerate(rows[:_HEADER_SCAN_ROWS]):
                columns = _columns(row)
                if columns is not None:
                    found.append((rows, columns, index))
                    break
    finally:
        workbook.close()
    if not found:
        raise FeedbackRefused("missing_columns")
    if len(found) > 1:
        raise FeedbackRefused("ambiguous_sheet")
    return found[0]


def _columns(row: Sequence) -> dict[str, int] | None:
    columns: dict[str, int] = {}
    for index, cell in enumerate(row):
        key = header_key(cell) if isinstance(cell, str) else ""
        for name, keys in _HEADING_KEYS.items():
            if key in keys:
                if name in columns:
                    return None  # a column named twice is not a header this reader can trust
                columns[name] = index
    return columns if len(columns) == len(_HEADING_KEYS) else None


def _blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _cell_date(cell: object) -> dt.date | None:
    if isinstance(cell, dt.datetime):
        return cell.date()
    if isinstance(cell, dt.date):
        return cell
    if isinstance(cell, str):
        try:
            return dt.date.fromisoformat(cell.strip())
        except ValueError:
            return None
    return None


def read_feedback(
    data: bytes,
    password: str | None,
    *,
    sent: Mapping[str, dt.date],
    on: dt.date,
    limits: IntakeLimits | None = None,
) -> FeedbackOutcome:
    """Decrypt and validate a feedback file in memory; raises :class:`FeedbackRefused`.

    :param sent: the referral ids this Sociaal Huis received under the agreement → the day each
        was sent (nothing else is a known id).
    :param on: the day the file is processed (no outcome may be dated after it).
    """
    limits = limits or IntakeLimits.from_env()
    rows, columns, header = _sheet_rows(_decrypted(data, password, limits), limits)
    problems: dict[str, list[int]] = {reason: [] for reason in ROW_REASONS}
    outcome = FeedbackOutcome()
    seen: dict[str, FeedbackRow] = {}
    for index in range(header + 1, len(rows)):
        row = rows[index]
        cells = [row[columns[name]] if columns[name] < len(row) else None for name in ("code", "outcome", "date")]
        if all(_blank(c) for c in cells):
            continue
        line = index + 1
        code = str(cells[0]).strip().upper() if not _blank(cells[0]) else ""
        key = _OUTCOME_KEYS.get(header_key(cells[1])) if isinstance(cells[1], str) else None
        day = _cell_date(cells[2])
        if code not in sent:
            problems["unknown_referral"].append(line)
            continue
        if key is None:
            problems["bad_outcome"].append(line)
            continue
        if day is None or day > on or day < sent[code]:
            problems["bad_date"].append(line)
            continue
        item = FeedbackRow(line, code, key, day)
        earlier = seen.get(code)
        if earlier is None:
            seen[code] = item
            outcome.rows.append(item)
        elif (earlier.outcome, earlier.date) == (key, day):
            outcome.duplicate_lines.append(line)
        else:
            problems["conflicting_rows"].append(line)
    if any(problems.values()):
        raise FeedbackRefused(next(r for r in ROW_REASONS if problems[r]), problems)
    if not outcome.rows:
        raise FeedbackRefused("empty")
    return outcome


def sent_referrals(session: Session, protocol: Protocol) -> dict[str, dt.date]:
    """The referral ids sent to the Sociaal Huis under ``protocol`` → the day each was sent."""
    rows = session.execute(
        sa.select(Referral.code, Referral.sent_at).where(Referral.protocol_id == protocol.id, Referral.sent_at.is_not(None))
    )
    return {code: sent_at.date() for code, sent_at in rows}


def receive_feedback(
    session: Session,
    protocol: Protocol,
    data: bytes,
    *,
    password: str,
    on: dt.date,
    actor: audit.Actor,
    limits: IntakeLimits | None = None,
) -> FeedbackResult:
    """Open the feedback file's exchange, validate the file and record its outcomes or its refusal.

    The file's name is never kept (it is the Sociaal Huis's and may name a family). A refused file
    leaves its exchange ``quarantined`` with the refusal's code: the caller quarantines the file
    and sends :func:`refusal_report`. The same bytes received again (a new run) are a duplicate.
    """
    require_gate(protocol, on)
    digest = hashlib.sha256(data).hexdigest()
    exchange, is_new = ledger.open_exchange(
        session, protocol, request_sha256=digest, request_name=None, request_size=len(data),
        dag_id=actor.dag_id, run_id=actor.run_id, exchange_date=on,
    )
    if not is_new and exchange.run_id != actor.run_id:
        audit.record(
            session, "referral.feedback_duplicate", "duplicate", actor=actor, protocol=protocol, exchange_id=exchange.id,
            file_hashes={"feedback": digest},
            message=f"feedback file has the same SHA-256 as exchange {exchange.id}: it is not recorded again",
            fact_key=f"referral-feedback-duplicate:{exchange.id}:{actor.run_id}",
        )
        return FeedbackResult(exchange.id, duplicate_of=exchange.id)
    try:
        outcome = read_feedback(data, password, sent=sent_referrals(session, protocol), on=on, limits=limits)
    except FeedbackRefused as err:
        ledger.update_exchange(session, exchange, state="quarantined", failure_code=err.code)
        audit.record(
            session, "referral.feedback_refused", "refused", actor=actor, protocol=protocol, exchange_id=exchange.id,
            file_hashes={"feedback": digest}, counts={reason: len(lines) for reason, lines in err.lines.items()},
            message=f"{err.code}: {err}", fact_key=f"referral-feedback-refused:{exchange.id}",
        )
        return FeedbackResult(exchange.id, refused=err)
    counts = record_feedback(session, protocol, exchange, outcome, actor=actor)
    return FeedbackResult(exchange.id, counts=counts)


def record_feedback(
    session: Session, protocol: Protocol, exchange: Exchange, outcome: FeedbackOutcome, *, actor: audit.Actor
) -> dict[str, int]:
    """Store a validated file's outcomes (each once) and audit them; returns the counts."""
    referrals = {
        r.code: r
        for r in session.scalars(
            sa.select(Referral).where(Referral.protocol_id == protocol.id, Referral.code.in_([row.code for row in outcome.rows]))
        )
    }
    ids = [r.id for r in referrals.values()]
    held = set(
        session.execute(
            sa.select(ReferralFeedback.referral_id, ReferralFeedback.outcome, ReferralFeedback.outcome_date)
            .where(ReferralFeedback.referral_id.in_(ids))
        ).tuples()
    )
    recorded: Counter[str] = Counter()
    for row in outcome.rows:
        referral = referrals[row.code]
        if (referral.id, row.outcome, row.date) in held:
            recorded["already_recorded"] += 1
            continue
        session.add(ReferralFeedback(referral_id=referral.id, exchange_id=exchange.id, outcome=row.outcome, outcome_date=row.date))
        recorded[row.outcome] += 1
    session.flush()
    counts = {"rows": len(outcome.rows), "duplicate_rows": len(outcome.duplicate_lines), **recorded}
    ledger.update_exchange(session, exchange, state="validated", counts=counts)
    audit.record(
        session, "referral.feedback_recorded", actor=actor, protocol=protocol, exchange_id=exchange.id,
        data_categories=CATEGORIES, file_hashes={"feedback": exchange.request_sha256}, counts=counts,
        subject_refs=[bytes(r.family_ref) for r in referrals.values()],
        message=f"feedback of the Sociaal Huis of {protocol.municipality} on {len(outcome.rows)} referral(s) recorded",
        fact_key=f"referral-feedback:{exchange.id}",
    )
    return counts


def feedback_template(protocol: Protocol | None = None, codes: Sequence[str] = (), *, on: dt.date) -> bytes:
    """The workbook a Sociaal Huis fills in: one row per referral id (pre-filled with ``codes``).

    It holds no personal data (referral ids are opaque); the Sociaal Huis saves it with the agreed
    password before sending it back.
    """
    book = xlsx.Workbook(xlsx.Properties(created=dt.datetime.combine(on, dt.time()), title="Terugkoppeling doorverwijzingen",
                                         author="Opgroeien / Kind en Gezin", company="Opgroeien"))
    book.add_sheet(
        "Terugkoppeling",
        [xlsx.Column(HEADINGS["code"], xlsx.TEXT, 22), xlsx.Column(HEADINGS["outcome"], xlsx.LABEL, 26),
         xlsx.Column(HEADINGS["date"], xlsx.TEXT, 14)],
        [(code, None, None) for code in codes],
    )
    book.add_info_sheet("Info", [
        *([("Sociaal Huis", f"{protocol.municipality} (NIS {protocol.nis_code})"), ("Protocol", str(protocol.id))]
          if protocol is not None else []),
        ("Doorverwijzingsnummer", "zoals op de lijst van doorverwijzingen, één rij per doorverwijzing"),
        ("Resultaat", "één van: " + ", ".join(OUTCOMES.values())),
        ("Datum", "de datum van het resultaat, als JJJJ-MM-DD (niet in de toekomst)"),
        ("Versleuteling", "Bewaar het bestand met het wachtwoord dat de DPO's afspraken en stuur het via het afgesproken kanaal."),
        ("Privacy", "Vermeld geen namen of andere gegevens: enkel het nummer, het resultaat en de datum."),
    ])
    return book.to_bytes()


def refusal_report(protocol: Protocol, exchange: Exchange, err: FeedbackRefused) -> bytes:
    """The report the Sociaal Huis receives for a refused feedback file: codes and line numbers only."""
    lines = [
        "Groeipakket / Kind en Gezin - terugkoppeling geweigerd / feedback refused",
        "",
        f"Sociaal Huis: {protocol.municipality} (NIS {protocol.nis_code})",
        f"Protocol: {protocol.id} (samenwerkingsovereenkomst {protocol.agreement_ref})",
        f"Uitwisseling / exchange: {exchange.id}",
        f"SHA-256: {exchange.request_sha256}",
        "",
        f"Reden / reason: {err.code}",
        f"  {err}",
        "",
        "Niets uit dit bestand werd geregistreerd. Corrigeer het en stuur het opnieuw.",
        "Nothing in this file was recorded. Correct it and send it again.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
