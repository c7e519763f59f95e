"""``read_request``: from the bytes that arrived to the set of INSZ numbers to match.

Steps, each refusing with an :class:`IntakeError` a person can act on:

1. size limit, then what the file is and how it is encrypted (no password needed);
2. unencrypted files are refused unless the caller allows them (the protocol requires
   encryption);
3. decryption in memory, the password verified first;
4. for xlsx, a zip-bomb check on the decrypted package before any parser sees it;
5. python-calamine reads the workbook: fast, cells as stored — a formula cell gives the value
   Excel or LibreOffice cached when saving; nothing is ever evaluated or recalculated;
6. the sheet and the column holding the INSZ numbers are found;
7. every data row is normalised and validated (:mod:`welfare_exchange.intake.validation`).

A wall-clock budget is checked between the steps and while validating. Parsing itself runs
in native code and cannot be interrupted, which is why the size, row and unpacked-size limits
come first: they bound how long it can take. The Airflow task's ``execution_timeout`` is the
hard stop around all of it.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from dataclasses import dataclass, field

from python_calamine import CalamineWorkbook, SheetTypeEnum

from welfare_exchange.intake.columns import AmbiguousColumn, Candidate, cell_text, find_column, is_blank
from welfare_exchange.intake.decrypt import check_zip, decrypt, detect_encryption
from welfare_exchange.intake.failures import IntakeError
from welfare_exchange.intake.validation import ValidationReport, Validator
from welfare_exchange.settings import INTAKE_PREFIX, intake_overrides
from welfare_exchange.untrusted import shown

# A sheet may carry a few title or note rows above and below the data.
_SPARE_ROWS = 100
_CHECK_EVERY = 10_000


@dataclass(frozen=True)
class IntakeLimits:
    """Limits against hostile or broken files; each has an environment variable.

    :param max_file_bytes: size of the file as received (``…_MAX_FILE_BYTES``, 50 MiB; a
        200,000-row request is about 6 MB).
    :param max_rows: data rows in the INSZ sheet (``…_MAX_ROWS``, 250,000; the largest city
        has about 180,000 residents aged 0–25).
    :param max_decompressed_bytes: what the xlsx zip may unpack to (``…_MAX_DECOMPRESSED_BYTES``,
        256 MiB).
    :param max_compression_ratio: per large zip member (``…_MAX_COMPRESSION_RATIO``, 100;
        real sheets compress about 5–15 times).
    :param max_zip_members: parts in the xlsx package (``…_MAX_ZIP_MEMBERS``, 1,000).
    :param max_seconds: wall-clock budget of one intake (``…_MAX_SECONDS``, 60).

    The variables are named ``WELFARE_EXCHANGE_INTAKE_`` + the upper-case field name.
    """

    max_file_bytes: int = 50 * 1024 * 1024
    max_rows: int = 250_000
    max_decompressed_bytes: int = 256 * 1024 * 1024
    max_compression_ratio: float = 100.0
    max_zip_members: int = 1_000
    max_seconds: float = 60.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "IntakeLimits":
        """Defaults overridden by ``WELFARE_EXCHANGE_INTAKE_<FIELD>`` variables."""
        given = intake_overrides(environ)
        values = {}
        for name, default in cls().__dict__.items():
            raw = given.get(name)
            if raw is not None:
                try:
                    values[name] = type(default)(raw)
                except ValueError as exc:
                    raise ValueError(f"setting {INTAKE_PREFIX + name.upper()} must be a number") from exc
        return cls(**values)


@dataclass
class IntakeResult:
    """What a request file yields.

    :param valid: distinct valid INSZ numbers in file order — the set that will be matched.
        Personal data: kept out of ``repr`` so a stray log line cannot print it.
    :param report: counts and row numbers per reason (see :class:`ValidationReport`).
    """

    valid: list[str] = field(repr=False)
    report: ValidationReport


class _Clock:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise IntakeError("timeout")


def read_request(
    data: bytes,
    password: str | None,
    *,
    as_of: dt.date,
    age_window: tuple[int, int] = (0, 25),
    limits: IntakeLimits = IntakeLimits(),
    require_encryption: bool = True,
) -> IntakeResult:
    """Decrypt, read and validate a municipality's request file, entirely in memory.

    :param data: the file as received (still encrypted).
    :param password: the password agreed between the DPOs for the protocol.
    :param as_of: the exchange date (the run's logical date) for the age window.
    :param age_window: youngest and oldest age, inclusive, that the protocol covers.
    :param limits: size, row, unpacked-size and time limits.
    :param require_encryption: refuse unencrypted files (``not_encrypted``); the protocol
        requires encryption, so only tests and one-off operator checks turn this off.
    :raises IntakeError: when the file cannot be processed; invalid *rows* do not raise, they
        are counted in the report.
    """
    clock = _Clock(limits.max_seconds)
    if not data:
        raise IntakeError("not_excel")
    if len(data) > limits.max_file_bytes:
        raise IntakeError("too_large")
    encryption = detect_encryption(data)
    if encryption is None:
        if require_encryption:
            raise IntakeError("not_encrypted")
        plain = data
    else:
        plain = decrypt(data, password, encryption)
    clock.check()
    if plain[:4] == b"PK\x03\x04":
        check_zip(
            plain,
            max_bytes=limits.max_decompressed_bytes,
            max_ratio=limits.max_compression_ratio,
            max_members=limits.max_zip_members,
        )
    elif plain[:2] == b"PK":
        raise IntakeError("corrupt")
    clock.check()
    sheet_name, rows, candidate = _pick_sheet(plain, limits, clock)
    return _validate(rows, candidate, sheet_name, encryption, as_of, age_window, clock)


def _open_workbook(plain: bytes) -> CalamineWorkbook:
    try:
        return CalamineWorkbook.from_filelike(io.BytesIO(plain))
    except Exception as exc:  # CalamineError, ZipError, XmlError, …
        raise IntakeError("corrupt") from exc


def _pick_sheet(plain: bytes, limits: IntakeLimits, clock: _Clock) -> tuple[str, list, Candidate]:
    workbook = _open_workbook(plain)
    by_header: list[tuple[str, list, Candidate]] = []
    by_shape: list[tuple[str, list, Candidate]] = []
    header_only = False
    ambiguous_column = False
    try:
        for position, meta in enumerate(workbook.sheets_metadata, start=1):
            if meta.typ != SheetTypeEnum.WorkSheet:
                continue  # chart and macro sheets hold no list
            try:
                sheet = workbook.get_sheet_by_name(meta.name)
                end = sheet.end
                if end is not None and end[0] + 1 > limits.max_rows + _SPARE_ROWS:
                    raise IntakeError("too_many_rows")
                # From A1 (no skipping of leading empty rows), so index + 1 is the row number
                # the municipality sees in its spreadsheet.
                rows = sheet.to_python(skip_empty_area=False)
            except IntakeError:
                raise
            except Exception as exc:
                raise IntakeError("corrupt") from exc
            clock.check()
            try:
                candidate = find_column(rows)
            except AmbiguousColumn:
                ambiguous_column = True
                continue
            if candidate is None:
                continue
            has_data = any(
                candidate.column < len(row) and not is_blank(row[candidate.column])
                for row in rows[candidate.first_data_row :]
            )
            if not has_data:
                header_only = header_only or candidate.strength == "header"
                continue
            # The sheet's name is the municipality's (it may be a person's name or number): by position and handle.
            label = f"sheet {position} ({shown(meta.name)})"
            (by_header if candidate.strength == "header" else by_shape).append((label, rows, candidate))
    finally:
        workbook.close()
    for found in (by_header, by_shape):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise IntakeError("ambiguous_sheet")
    if ambiguous_column:
        raise IntakeError("ambiguous_column")
    if header_only:
        raise IntakeError("empty")
    if not _any_content(plain):
        raise IntakeError("empty")
    raise IntakeError("no_insz_column")


def _any_content(plain: bytes) -> bool:
    workbook = _open_workbook(plain)
    try:
        for name in workbook.sheet_names:
            try:
                if workbook.get_sheet_by_name(name).end is not None:
                    rows = workbook.get_sheet_by_name(name).to_python()
                    if any(not is_blank(c) for row in rows for c in row):
                        return True
            except Exception:
                continue
        return False
    finally:
        workbook.close()


def _validate(
    rows: list,
    candidate: Candidate,
    sheet_name: str,
    encryption: str | None,
    as_of: dt.date,
    age_window: tuple[int, int],
    clock: _Clock,
) -> IntakeResult:
    validator = Validator(as_of, age_window)
    classify = validator.classify
    col = candidate.column
    seen: set[str] = set()
    valid: list[str] = []
    invalid: dict[str, list[int]] = {}
    duplicates: list[int] = []
    counted = 0
    padded = 0
    for index in range(candidate.first_data_row, len(rows)):
        row = rows[index]
        cell = row[col] if col < len(row) else ""
        if type(cell) is str and len(cell) == 11 and cell.isdigit():
            text, was_padded = cell, False  # the common case: eleven digits stored as text
        elif is_blank(cell):
            if all(is_blank(c) for c in row):
                continue  # blank rows are layout, not data: skipped and not counted
            counted += 1
            invalid.setdefault("empty", []).append(index + 1)
            continue
        else:
            text, was_padded = cell_text(cell)
        counted += 1
        if counted % _CHECK_EVERY == 0:
            clock.check()
        reason = classify(text)
        if reason is not None:
            invalid.setdefault(reason, []).append(index + 1)
        elif text in seen:
            duplicates.append(index + 1)
        else:
            seen.add(text)
            valid.append(text)
            padded += was_padded
    if counted == 0:
        raise IntakeError("empty")
    report = ValidationReport(
        rows=counted,
        valid=len(valid),
        invalid=invalid,
        duplicates=duplicates,
        encryption=encryption,
        sheet=sheet_name,
        column=candidate.label,
        zero_padded=padded,
    )
    return IntakeResult(valid=valid, report=report)
