"""Find the sheet and the column that hold the INSZ numbers, and turn cells into text.

Municipalities head the column in many ways: "INSZ", "INSZ-nummer", "Rijksregisternummer",
"RRN", "rijksregister nr.", "national number", "NISS", … Headers are compared after
lower-casing and dropping accents, spaces and punctuation. Without a recognisable header the
first column whose cells are mostly INSZ-shaped is taken. Only that one column is ever read
into the result: names, addresses and other columns stay in the parsed workbook and are
dropped with it.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

from welfare_exchange import insz
from welfare_exchange.untrusted import shown

#: Normalised headers that name the INSZ column exactly.
EXACT_HEADERS = frozenset(
    {
        "insz", "insznummer", "insznr", "inszno", "inszkind", "inszvanhetkind",
        "rijksregisternummer", "rijksregisternr", "rijksregisterno", "rijksregister",
        "rrn", "rrnr", "rrnummer", "nrn", "nn", "nnr",
        "nationalnumber", "nationalregisternumber", "nationalregistrationnumber",
        "numeronational", "numerodenregistrenational", "numeroderegistrenational",
        "niss", "inss", "ssin", "bisnummer", "bisnr", "inszofbis", "inszbis", "rrnofbis",
    }
)
#: Parts that make a longer header an INSZ header ("INSZ van het kind (verplicht)").
HEADER_PARTS = ("insz", "rijksregister", "nationalnumber", "nationalregister", "registrenational", "niss")

# Cells sampled to decide whether a header-less column is mostly INSZ-shaped.
_SAMPLE_ROWS = 200
_SHAPED_SHARE = 0.6
_HEADER_SCAN_ROWS = 20
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def header_key(text: str) -> str:
    """Lower-case, accent-free, only letters and digits: ``"Rijksregister nr."`` -> ``"rijksregisternr"``."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NON_ALNUM.sub("", folded.lower())


def header_score(cell: object) -> int:
    """2 for an exact INSZ header, 1 for a header containing one, 0 otherwise."""
    if not isinstance(cell, str) or not cell.strip():
        return 0
    key = header_key(cell)
    if key in EXACT_HEADERS:
        return 2
    if any(part in key for part in HEADER_PARTS):
        return 1
    return 0


def cell_text(cell: object) -> tuple[str, bool]:
    """The INSZ text of a cell and whether a lost leading zero was restored.

    Text cells are normalised (separators removed). A number cell (calamine gives floats) is
    written without decimals; if that gives fewer than 11 digits — a number that started with 0,
    as for children born 2000–2009, typed into a number cell — the zeros are put back only when
    the result is a valid INSZ, so a genuinely short number stays short and is reported as such.
    Dates, times and booleans give text that can never be 11 digits.
    """
    if isinstance(cell, str):
        if len(cell) == 11 and cell.isdigit():
            return cell, False  # the common case, without the regex
        return insz.normalise(cell), False
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE", False
    if isinstance(cell, (int, float)):
        if isinstance(cell, float) and not cell.is_integer():
            return "fraction", False
        digits = str(int(cell))
        # Born in 2000 the number starts with 00 or 000 and loses all of them, hence 8-10.
        if 8 <= len(digits) <= 10:
            padded = digits.zfill(11)
            if insz.is_valid(padded):
                return padded, True
        return digits, False
    if isinstance(cell, (dt.date, dt.time, dt.timedelta)):
        return "date", False
    return "" if cell is None else str(cell), False


def is_blank(cell: object) -> bool:
    """An empty cell as calamine gives it."""
    return cell is None or cell == "" or (isinstance(cell, str) and not cell.strip())


def _looks_like_insz(cell: object) -> bool:
    text, _ = cell_text(cell)
    return len(text) in (10, 11) and text.isdigit()


def column_letter(index: int) -> str:
    """0 -> "A", 27 -> "AB"."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@dataclass(frozen=True)
class Candidate:
    """Where one sheet keeps its INSZ numbers.

    :param strength: ``"header"`` (a recognised header) or ``"shape"`` (mostly INSZ-shaped).
    :param header_row: 0-based index of the header row, or ``None`` without a header.
    :param column: 0-based column index.
    :param label: what the report calls the column: ``"column B"``, with the header's handle
        when it has one (``"column B (#1a2b3c4d5e6f)"``).
    :param first_data_row: 0-based index of the first row after the header.
    """

    strength: str
    header_row: int | None
    column: int
    label: str
    first_data_row: int


class AmbiguousColumn(Exception):
    """Two or more columns of one sheet carry an INSZ header of the same strength."""


def find_column(rows: list[list[object]]) -> Candidate | None:
    """The INSZ column of one sheet's rows (from A1), or ``None``.

    Raises :class:`AmbiguousColumn` when two columns of the header row are equally good.
    """
    non_blank = [i for i, row in enumerate(rows[: _HEADER_SCAN_ROWS * 5]) if any(not is_blank(c) for c in row)]
    best: tuple[int, int, list[int]] | None = None  # (score, row index, columns)
    for i in non_blank[:_HEADER_SCAN_ROWS]:
        scores = [header_score(cell) for cell in rows[i]]
        top = max(scores, default=0)
        if top and (best is None or top > best[0]):
            best = (top, i, [col for col, score in enumerate(scores) if score == top])
            if top == 2:
                break
    if best is not None:
        _, row_index, columns = best
        if len(columns) > 1:
            raise AmbiguousColumn()
        label = _safe_label(str(rows[row_index][columns[0]]).strip(), columns[0])
        return Candidate("header", row_index, columns[0], label, row_index + 1)
    return _find_by_shape(rows)


def _find_by_shape(rows: list[list[object]]) -> Candidate | None:
    sample = []
    for row in rows:
        if any(not is_blank(c) for c in row):
            sample.append(row)
            if len(sample) >= _SAMPLE_ROWS:
                break
    if not sample:
        return None
    width = max(len(row) for row in sample)
    for col in range(width):
        cells = [row[col] for row in sample if col < len(row) and not is_blank(row[col])]
        shaped = sum(1 for cell in cells if _looks_like_insz(cell))
        if cells and shaped >= _SHAPED_SHARE * len(sample):
            first = next(i for i, row in enumerate(rows) if any(not is_blank(c) for c in row))
            head = rows[first][col] if col < len(rows[first]) else None
            # A title over the column (letters, no digits) is a header we did not recognise.
            if isinstance(head, str) and head.strip() and not any(ch.isdigit() for ch in head):
                return Candidate("shape", first, col, _safe_label(head.strip(), col), first + 1)
            return Candidate("shape", None, col, f"column {column_letter(col)}", first)
    return None


def _safe_label(text: str, col: int) -> str:
    """The column as XCom, logs and reports name it: its letter, and its header only as a handle
    (the header is the municipality's text: it may hold a name or a number)."""
    return f"column {column_letter(col)} ({shown(text)})"
