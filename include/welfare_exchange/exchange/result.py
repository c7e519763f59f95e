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
from collections.abc import Sequence
from typing import Any

from welfare_exchange import xlsx
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
#: The result and feed columns: INSZ numbers as text (the leading zero survives), periods as dates.
COLUMNS = {
    "child_insz": xlsx.Column(HEADINGS["child_insz"], xlsx.TEXT, 22),
    "beneficiary_insz": xlsx.Column(HEADINGS["beneficiary_insz"], xlsx.TEXT, 22),
    "supplement": xlsx.Column(HEADINGS["supplement"], xlsx.LABEL, 18),
    "period_start": xlsx.Column(HEADINGS["period_start"], xlsx.DATE, 18),
    "period_end": xlsx.Column(HEADINGS["period_end"], xlsx.DATE, 18),
}
#: How each field is read from a row (a match row or a feed change).
FIELD_VALUES = {
    "child_insz": lambda row: row.child_insz,
    "beneficiary_insz": lambda row: row.beneficiary_insz,
    "supplement": lambda row: SUPPLEMENT_LABELS.get(row.supplement, row.supplement),
    "period_start": lambda row: row.period_start,
    "period_end": lambda row: row.period_end,
}
AUTHOR = "Opgroeien / Agentschap Uitbetaling Groeipakket"
CONFIDENTIAL = "Vertrouwelijk: persoonsgegevens. Enkel te gebruiken voor het doel in het protocol."


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
    book = xlsx.Workbook(
        xlsx.Properties(
            created=dt.datetime.combine(exchange.exchange_date, dt.time(0, 0)),
            title=f"Groeipakket - resultaat gegevensuitwisseling {protocol.municipality}",
            subject=f"Protocol {protocol.id}, uitwisseling {exchange.id}",
            author=AUTHOR,
            company="Opgroeien",
            comments=CONFIDENTIAL,
        )
    )
    fields = [f for f in HEADINGS if f in protocol.allowed_fields]
    book.add_sheet("Resultaat", [COLUMNS[f] for f in fields], _result_rows(rows, fields))
    book.add_sheet(
        "Validatierapport",
        [
            xlsx.Column("Reden / reason", xlsx.LABEL, 48),
            xlsx.Column("Aantal rijen / rows", xlsx.NUMBER, 20),
            xlsx.Column("Rijnummers in uw bestand / row numbers", xlsx.LABEL, 60),
        ],
        report_rows,
        freeze_header=False,
    )
    book.add_info_sheet("Info", [
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
    return book.to_bytes()


def _result_rows(rows: Sequence[MatchRow], fields: Sequence[str]):
    """The allowed fields of each row, in heading order (the hot loop: up to ~200,000 rows)."""
    label = SUPPLEMENT_LABELS.get
    if list(fields) == list(HEADINGS):  # every field allowed: one tuple per row, no lookups
        return [(r.child_insz, r.beneficiary_insz, label(r.supplement, r.supplement), r.period_start, r.period_end) for r in rows]
    getters = [FIELD_VALUES[f] for f in fields]
    return [tuple(get(r) for get in getters) for r in rows]
