"""The feed workbook the municipality's DPO opens: the interval's changes, why, and until when.

Two sheets: ``Wijzigingen`` (the kind of change, whether it has retroactive effect, and only the
fields the protocol allows, INSZ numbers as text so the leading zero of children born 2000–2009
survives) and ``Info`` (protocol, legal basis, purpose, interval, what each kind of change means,
counts per kind, deletion deadline).

Deterministic: the same changes and interval give the same bytes — rows sorted, document
properties fixed to the interval's end, never the wall clock. (The encrypted file is not: Agile
encryption uses random salts, which is why a feed is built once and its staged file reused.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from welfare_exchange import xlsx
from welfare_exchange.db.models import Protocol
from welfare_exchange.exchange.result import AUTHOR, COLUMNS, CONFIDENTIAL, FIELD_VALUES, HEADINGS, SUPPLEMENT_LABELS
from welfare_exchange.feeds import changes as changes_
from welfare_exchange.feeds.changes import FeedChange
from welfare_exchange.feeds.interval import FeedInterval


#: What each kind of change tells the municipality's case worker (the Info sheet).
MEANING = {
    changes_.NEW: "het kind heeft recht in de vermelde periode (leeg einde: lopend)",
    changes_.BENEFICIARY_CHANGED: "vanaf het begin van de vermelde periode wordt aan een andere begunstigde betaald",
    changes_.INTERRUPTED: "in de vermelde periode had het kind geen recht; ervoor en erna wel",
    changes_.WITHDRAWN: "het recht in de vermelde periode is ingetrokken: het bestond niet",
    changes_.ENDED: "het recht eindigt op de laatste dag van de vermelde periode en loopt daarna niet verder",
}


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
    book = xlsx.Workbook(
        xlsx.Properties(
            created=dt.datetime.combine(interval.end, dt.time()),
            title=f"Groeipakket - structurele gegevensdeling {protocol.municipality}",
            subject=f"Protocol {protocol.id}, periode {interval.start.isoformat()} t.e.m. {interval.last_day.isoformat()}",
            author=AUTHOR,
            company="Opgroeien",
            comments=CONFIDENTIAL,
        )
    )
    fields = [f for f in HEADINGS if f in protocol.allowed_fields]
    getters = [FIELD_VALUES[f] for f in fields]
    book.add_sheet(
        "Wijzigingen",
        [xlsx.Column("Wijziging", xlsx.LABEL, 22), xlsx.Column("Met terugwerkende kracht", xlsx.LABEL, 14),
         *(COLUMNS[f] for f in fields)],
        [(row.change, "ja" if row.retroactive else "nee", *(get(row) for get in getters)) for row in changes],
    )
    tally = changes_.counts(changes)
    book.add_info_sheet("Info", [
        ("Lokaal bestuur", f"{protocol.municipality} (NIS {protocol.nis_code})"),
        ("Protocol", str(protocol.id)),
        ("Rechtsgrond", protocol.legal_basis),
        ("Doel (doelbinding)", protocol.purpose),
        ("Periode", f"{interval.start.isoformat()} t.e.m. {interval.last_day.isoformat()}"),
        ("Toeslagen", ", ".join(SUPPLEMENT_LABELS.get(s, s) for s in protocol.supplements)),
        ("Inhoud", "De wijzigingen die het agentschap tijdens deze periode registreerde, ook als ze vroeger ingaan."),
        *((kind.capitalize(), f"{tally[kind]} — {MEANING[kind]}") for kind in changes_.KINDS),
        ("Met terugwerkende kracht", f"{tally[changes_.RETROACTIVE]} — de periode van de wijziging begint vóór "
         f"{interval.start.isoformat()}: wat eerder gemeld werd, geldt voor die dagen niet meer zo"),
        ("Rijen", str(tally["rows"])),
        ("Vernietigen uiterlijk op", deletion_deadline.isoformat()),
        (
            "Gebruik",
            "Enkel voor het lokaal sociaal beleid zoals bepaald in het protocol. "
            "Vernietig dit bestand zodra het niet meer nodig is.",
        ),
    ])
    return book.to_bytes()
