"""The municipality's report of a campaign: counts only, small counts suppressed.

The municipality receives no personal data under Method 2, and a count can be personal data
too: "2 families in this village were reached by letter" points at people. Rules:

* **Primary suppression**: a count from 1 to 9 is shown as ``<10``; 0 is shown as 0.
* **Secondary suppression**: the categories add up to the total, so one hidden count could be
  worked out by subtraction. Further categories (the smallest first) are hidden — shown as
  ``afgeschermd`` — until the hidden ones together hold at least 10 families.
* A total below 10 is itself shown as ``<10``.

The report names the municipality, the protocol, the campaign, the reference date and the
offer's title: nothing about any family.

An e-mail whose delivery a crash left uncertain is counted apart, and apart again once an
operator resolved it (delivery confirmed in the SMTP log, or sent once more and accepted):
both are family counts, suppressed like every other. The agency's operator sees the exact
numbers (``outreach status``, ``outreach uncertain list``): they are the agency's own
operational figures about its outbox, which it holds message by message anyway; only the
municipality, which must learn nothing about single families, gets them suppressed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

THRESHOLD = 10
PRIMARY, SECONDARY = "<10", "afgeschermd"

#: Report categories, in the order they are shown: key → Dutch label.
CATEGORIES = {
    "email": "Bereikt per e-mail",
    "email_resolved": "Bereikt per e-mail na controle van een onzekere verzending",
    "letter": "Bereikt per brief",
    "bounced": "E-mail onbestelbaar (bounced)",
    "uncertain": "E-mail verstuurd, aflevering onzeker (nog na te gaan)",
    "unreachable": "Geen e-mail- of postadres gekend",
}


def suppress(counts: dict[str, int], threshold: int = THRESHOLD) -> dict[str, str]:
    """Each category's count as it may be shown, plus ``total`` (see the module's rules)."""
    total = sum(counts.values())
    hidden = {k for k, v in counts.items() if 0 < v < threshold}
    secondary: set[str] = set()
    while hidden and sum(counts[k] for k in hidden | secondary) < threshold:
        candidates = sorted((v, k) for k, v in counts.items() if v > 0 and k not in hidden | secondary)
        if not candidates:
            break
        secondary.add(candidates[0][1])
    shown = {}
    for key, value in counts.items():
        shown[key] = PRIMARY if key in hidden else SECONDARY if key in secondary else str(value)
    shown["total"] = PRIMARY if 0 < total < threshold else str(total)
    return shown


def render(
    *,
    municipality: str,
    nis_code: str,
    protocol_id: int,
    exchange_id: int,
    reference_date: dt.date,
    campaign_date: dt.date,
    offer_title: str,
    counts: dict[str, int],
    revision: int = 1,
) -> tuple[bytes, dict[str, str]]:
    """The report as UTF-8 text, and the suppressed figures it shows (``revision`` > 1: an update)."""
    shown = suppress({key: int(counts.get(key, 0)) for key in CATEGORIES})
    width = max(len(label) for label in CATEGORIES.values())
    lines = [
        "Groeipakket - rapport Methode 2 (het Groeipakket contacteert de gezinnen)",
        "",
        f"Lokaal bestuur: {municipality} (NIS {nis_code})",
        f"Protocol: {protocol_id}",
        f"Campagne: {exchange_id}",
        f"Aanbod: {offer_title}",
        f"Referentiedatum (sociale toeslag en domicilie): {reference_date.isoformat()}",
        f"Datum campagne: {campaign_date.isoformat()}",
        *(
            [f"Versie {revision}: vervangt versie {revision - 1} van dit rapport; onzekere e-mails werden intussen nagegaan."]
            if revision > 1 else []
        ),
        "",
        "Aantal gezinnen (begunstigden):",
        *(f"  {label:<{width}}  {shown[key]:>11}" for key, label in CATEGORIES.items()),
        f"  {'Totaal geselecteerd':<{width}}  {shown['total']:>11}",
        "",
        f"Aantallen van 1 tot {THRESHOLD - 1} staan als '{PRIMARY}'. Zodat ze niet door aftrekken te",
        f"vinden zijn, staan ook andere aantallen als '{SECONDARY}'. Zo kan geen gezin herkend worden.",
        "Dit rapport bevat geen persoonsgegevens: het lokaal bestuur krijgt onder Methode 2 enkel aantallen.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8"), shown


def report_name(nis_code: str, protocol_id: int, exchange_id: int, revision: int = 1) -> str:
    version = f"-versie-{revision}" if revision > 1 else ""
    return f"methode2-{nis_code}-p{protocol_id}-campagne-{exchange_id}-rapport{version}.txt"


def report_counts(outcomes: dict[str, Any], unreachable: int) -> dict[str, int]:
    """The report's categories from the outbox's outcome counts (:func:`~welfare_exchange.outreach.outbox.outcome_counts`).

    A resolved uncertain message counts as reached after the check when it was confirmed or
    sent again and accepted, as bounced when the second sending was refused.
    """

    def count(*keys: str) -> int:
        return sum(int(outcomes.get(key, 0)) for key in keys)

    return {
        "email": count("email"),
        "email_resolved": count("resolved_sent", "resolved_resent"),
        "letter": count("letter"),
        "bounced": count("bounced", "resolved_bounced"),
        "uncertain": count("uncertain"),
        "unreachable": int(unreachable),
    }
