"""The feed workbook the municipality's DPO opens: the interval's changes, why, and until when.

Two sheets: ``Wijzigingen`` (the kind of change and only the fields the protocol allows,
INSZ numbers as text so the leading zero of children born 2000–2009 survives) and ``Info``
(protocol, legal basis, purpose, interval, counts per kind of change, deletion deadline).

Deterministic: the same changes and interval give the same bytes — rows sorted, document
properties fixed to the interval's end, never the wall clock. (The encrypted file is not: Agile
encryption uses random salts, which is why a feed is built once and its staged file reused.)
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence

import xlsxwriter

from welfare_exchange.db.models import Protocol
from welfare_exchange.exchange.result import HEADINGS, SUPPLEMENT_LABELS, write_info_sheet
from welfare_exchange.feeds import changes as changes_
from welfare_exchange.feeds.changes import FeedChange
from welfare_exchange.feeds.interval import FeedInterval


def feed_file_name(protocol: Protocol, interval: FeedInterval) -> str:
    """E.g. ``groeipakket_structureel_44021_p12_2026-08-01_2026-08-31.xlsx`` (first and last day)."""
    return (
        f"groeipakket_structureel_{protocol.nis_code}_p{protocol.id}_"
        f"{interval.start.isoformat()}_{interval.last_day.isoformat()}.xlsx"
    )


def build_workbook(
    protocol: Protocol, interval: FeedInterval, changes: Sequence[FeedChange], deletion_deadline: dt.date
) -> bytes:
    """The plaintext xlsx bytes (kept in memory only; the caller encrypts them at once)."""
    fields = [f for f in HEADINGS if f in protocol.allowed_fields]
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True, "constant_memory": True})
    workbook.set_properties(
        {
            "title": f"Groeipakket - structurele gegevensdeling {protocol.municipality}",
            "subject": f"Protocol {protocol.id}, periode {interval.start.isoformat()} t.e.m. {interval.last_day.isoformat()}",
            "author": "Opgroeien / Agentschap Uitbetaling Groeipakket",
            "company": "Opgroeien",
            "created": dt.datetime.combine(interval.end, dt.time()),
            "comments": "Vertrouwelijk: persoonsgegevens. Enkel te gebruiken voor het doel in het protocol.",
        }
    )
    bold = workbook.add_format({"bold": True})
    date_format = workbook.add_format({"num_format": "yyyy-mm-dd"})
    text = workbook.add_format({"num_format": "@"})

    sheet = workbook.add_worksheet("Wijzigingen")
    sheet.write_string(0, 0, "Wijziging", bold)
    sheet.set_column(0, 0, 22)
    for col, field in enumerate(fields, start=1):
        sheet.write_string(0, col, HEADINGS[field], bold)
        sheet.set_column(col, col, 22 if "insz" in field else 18)
    for r, row in enumerate(changes, start=1):
        values = {
            "child_insz": row.child_insz,
            "beneficiary_insz": row.beneficiary_insz,
            "supplement": SUPPLEMENT_LABELS.get(row.supplement, row.supplement),
            "period_start": row.period_start,
            "period_end": row.period_end,
        }
        sheet.write_string(r, 0, row.change)
        for col, field in enumerate(fields, start=1):
            value = values[field]
            if isinstance(value, dt.date):
                sheet.write_datetime(r, col, dt.datetime.combine(value, dt.time()), date_format)
            elif value is None:
                sheet.write_blank(r, col, None)
            else:
                sheet.write_string(r, col, value, text)
    sheet.freeze_panes(1, 0)

    tally = changes_.counts(changes)
    write_info_sheet(workbook, bold, [
        ("Lokaal bestuur", f"{protocol.municipality} (NIS {protocol.nis_code})"),
        ("Protocol", str(protocol.id)),
        ("Rechtsgrond", protocol.legal_basis),
        ("Doel (doelbinding)", protocol.purpose),
        ("Periode", f"{interval.start.isoformat()} t.e.m. {interval.last_day.isoformat()}"),
        ("Toeslagen", ", ".join(SUPPLEMENT_LABELS.get(s, s) for s in protocol.supplements)),
        ("Nieuw", str(tally[changes_.NEW])),
        ("Begunstigde gewijzigd", str(tally[changes_.BENEFICIARY_CHANGED])),
        ("Beëindigd", str(tally[changes_.ENDED])),
        ("Rijen", str(tally["rows"])),
        ("Vernietigen uiterlijk op", deletion_deadline.isoformat()),
        (
            "Gebruik",
            "Enkel voor het lokaal sociaal beleid zoals bepaald in het protocol. "
            "Vernietig dit bestand zodra het niet meer nodig is.",
        ),
    ])
    workbook.close()
    return buffer.getvalue()
