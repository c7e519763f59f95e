"""The result workbook the municipality's DPO opens: what was matched, why, and until when.

Three sheets: ``Resultaat`` (only the fields the protocol allows, INSZ numbers as text so the
leading zero of children born 2000–2009 survives), ``Validatierapport`` (per reason the
number of rows and their row numbers in the request — never the numbers themselves) and
``Info`` (protocol, legal basis, purpose, dates, counts, and the deletion deadline). The file is
encrypted with the protocol's key (Agile encryption, AES-256) before it touches the disk.

The same input gives the same workbook: rows are sorted and the document properties are fixed
to the exchange date, never the wall clock.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

import xlsxwriter

from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.exchange.matching import MatchRow

#: Column headings of the result sheet (Dutch, the municipality's language), per allowed field.
HEADINGS = {
    "child_insz": "INSZ kind",
    "beneficiary_insz": "INSZ begunstigde",
    "supplement": "Toeslag",
    "period_start": "Begin periode",
    "period_end": "Einde periode (leeg = lopend)",
}
SUPPLEMENT_LABELS = {"sociale_toeslag": "sociale toeslag", "zorgtoeslag": "zorgtoeslag", "schooltoeslag": "schooltoeslag"}


def result_file_name(protocol: Protocol, exchange: Exchange) -> str:
    """E.g. ``groeipakket_resultaat_44021_exchange-12_2026-11-28.xlsx``."""
    return f"groeipakket_resultaat_{protocol.nis_code}_exchange-{exchange.id}_{exchange.exchange_date.isoformat()}.xlsx"


def build_workbook(
    protocol: Protocol,
    exchange: Exchange,
    rows: Sequence[MatchRow],
    report_rows: Sequence[Sequence[Any]],
    summary: dict[str, Any],
    deletion_deadline: dt.date,
) -> bytes:
    """The plaintext xlsx bytes (kept in memory only; the caller encrypts them at once).

    :param rows: sorted match rows.
    :param report_rows: ``(reason label, row count, row numbers)`` from the validation report.
    :param summary: the validation summary (counts only).
    :param deletion_deadline: when the municipality must have deleted the file at the latest.
    """
    fields = [f for f in HEADINGS if f in protocol.allowed_fields]
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "constant_memory": True})
    fixed = dt.datetime.combine(exchange.exchange_date, dt.time(0, 0))
    workbook.set_properties(
        {
            "title": f"Groeipakket - resultaat gegevensuitwisseling {protocol.municipality}",
            "subject": f"Protocol {protocol.id}, uitwisseling {exchange.id}",
            "author": "Opgroeien / Agentschap Uitbetaling Groeipakket",
            "company": "Opgroeien",
            "created": fixed,
            "comments": "Vertrouwelijk: persoonsgegevens. Enkel te gebruiken voor het doel in het protocol.",
        }
    )
    bold = workbook.add_format({"bold": True})
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    text = workbook.add_format({"num_format": "@"})

    sheet = workbook.add_worksheet("Resultaat")
    for col, field in enumerate(fields):
        sheet.write_string(0, col, HEADINGS[field], bold)
        sheet.set_column(col, col, 22 if "insz" in field else 18)
    # Hot loop (up to ~200,000 rows): one writer per column chosen once; dates as Excel serial
    # numbers with a date format (what write_datetime stores, without its per-cell conversion).
    epoch = dt.date(1899, 12, 30)
    getters = {
        "child_insz": lambda row: row.child_insz,
        "beneficiary_insz": lambda row: row.beneficiary_insz,
        "supplement": lambda row: SUPPLEMENT_LABELS.get(row.supplement, row.supplement),
        "period_start": lambda row: row.period_start,
        "period_end": lambda row: row.period_end,
    }
    columns = [(col, getters[field], field.startswith("period_")) for col, field in enumerate(fields)]
    write_string, write_number = sheet.write_string, sheet.write_number
    for r, row in enumerate(rows, start=1):
        for col, get, is_date in columns:
            value = get(row)
            if value is None:
                continue  # an empty end date means: still running
            if is_date:
                write_number(r, col, (value - epoch).days, date_format)
            else:
                write_string(r, col, value, text)
    sheet.freeze_panes(1, 0)

    report = workbook.add_worksheet("Validatierapport")
    report.write_row(0, 0, ["Reden / reason", "Aantal rijen / rows", "Rijnummers in uw bestand / row numbers"], bold)
    for r, line in enumerate(report_rows, start=1):
        report.write_row(r, 0, list(line))
    report.set_column(0, 0, 48)
    report.set_column(2, 2, 60)

    write_info_sheet(workbook, bold, [
        ("Lokaal bestuur", f"{protocol.municipality} (NIS {protocol.nis_code})"),
        ("Protocol", str(protocol.id)),
        ("Uitwisseling", str(exchange.id)),
        ("Rechtsgrond", protocol.legal_basis),
        ("Doel (doelbinding)", protocol.purpose),
        ("Referentiedatum", protocol.reference_date.isoformat()),
        ("Uitwisselingsdatum", exchange.exchange_date.isoformat()),
        ("Toeslagen", ", ".join(SUPPLEMENT_LABELS.get(s, s) for s in protocol.supplements)),
        ("Rijen in aanvraag", str(summary.get("rows", ""))),
        ("Geldige INSZ-nummers", str(summary.get("valid", ""))),
        ("Kinderen met recht", str(len({row.child_insz for row in rows}))),
        ("Rijen in resultaat", str(len(rows))),
        ("Aanvraagbestand (SHA-256)", exchange.request_sha256),
        ("Vernietigen uiterlijk op", deletion_deadline.isoformat()),
        (
            "Gebruik",
            "Enkel voor de automatische toekenning van de steunmaatregel in het protocol. "
            "Vernietig dit bestand zodra het niet meer nodig is.",
        ),
    ])
    workbook.close()
    return buffer.getvalue()


def write_info_sheet(workbook: xlsxwriter.Workbook, bold: Any, lines: Sequence[tuple[str, str]]) -> None:
    """The ``Info`` sheet every file for a municipality carries: label / value lines."""
    info = workbook.add_worksheet("Info")
    for r, (label, value) in enumerate(lines):
        info.write_string(r, 0, label, bold)
        info.write_string(r, 1, value)
    info.set_column(0, 0, 28)
    info.set_column(1, 1, 90)
