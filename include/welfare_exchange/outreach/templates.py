"""The Dutch texts a family receives, as e-mail or as letter, built from the protocol's offer.

One text for both channels, so an e-mailed and a posted family read the same thing. It names
no one: the store has no names, and "Beste ouder" is what the agency writes anyway. Rendering
is deterministic — the same campaign and family always give the same bytes — so a message can
be rebuilt at send time instead of being stored with its address.
"""

from __future__ import annotations

import datetime as dt
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from welfare_exchange.runinfo import BRUSSELS
from welfare_exchange.transport.mail import make_message_id

AGENCY = "Groeipakket"
_MONTHS = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)


def dutch_date(day: dt.date) -> str:
    """``2026-11-01`` → ``1 november 2026``."""
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


@dataclass(frozen=True)
class Campaign:
    """What every message of one campaign shares (no personal data).

    :param exchange_id: the campaign's ledger id (the reference on every message).
    :param municipality: the municipality whose offer it is.
    :param offer: the validated offer (:func:`welfare_exchange.protocols.offer.validate_offer`).
    :param campaign_date: the run's exchange date (the date on every message).
    """

    exchange_id: int
    municipality: str
    offer: dict[str, Any]
    campaign_date: dt.date

    @property
    def subject(self) -> str:
        return self.offer.get("subject") or f"{self.municipality}: {self.offer['title']}"

    @property
    def reference(self) -> str:
        return f"campagne {self.exchange_id}"


def body_paragraphs(campaign: Campaign) -> list[tuple[str | None, str]]:
    """The message as ``(heading, text)`` paragraphs; both channels lay them out."""
    offer, town = campaign.offer, campaign.municipality
    contact = offer["contact"]
    ways = [contact[k] for k in ("email", "phone", "address") if contact.get(k)]
    return [
        (None, "Beste ouder,"),
        (
            None,
            f"Het {AGENCY} stuurt u dit bericht namens {town}. Uw gezin krijgt een sociale toeslag in het "
            f"{AGENCY}. Daarom komt u mogelijk in aanmerking voor dit aanbod van {town}.",
        ),
        (offer["title"], offer["what"]),
        ("Hoe vraagt u het aan?", offer["how_to_apply"]),
        (
            "Meer weten?",
            f"Lees meer op {offer['link']}\nVragen over het aanbod? Contacteer {contact['organisation']}: "
            + " - ".join(ways)
            + ".",
        ),
        (
            "Tot wanneer?",
            f"U kunt dit aanbod aanvragen van {dutch_date(dt.date.fromisoformat(offer['valid_from']))} "
            f"tot en met {dutch_date(dt.date.fromisoformat(offer['valid_until']))}.",
        ),
        (
            "Uw gegevens",
            f"U beslist zelf of u het aanbod aanvraagt. {town} heeft geen gegevens over uw gezin gekregen: "
            f"het {AGENCY} stuurt dit bericht zonder uw gegevens door te geven.",
        ),
        (None, f"Met vriendelijke groeten,\nHet {AGENCY}"),
    ]


def plain_text(campaign: Campaign) -> str:
    """The e-mail body (and the letter's text), with the footer."""
    parts = []
    for heading, text in body_paragraphs(campaign):
        parts.append(f"{heading}\n{text}" if heading else text)
    parts.append(
        f"Dit bericht werd automatisch verstuurd; antwoorden op dit adres worden niet gelezen. "
        f"Referentie: {campaign.reference}."
    )
    return "\n\n".join(parts) + "\n"


def message_key(exchange_id: int, beneficiary_id: int) -> str:
    """The outbox's idempotency key for one family in one campaign (also the Message-ID's seed)."""
    return f"campaign:{exchange_id}:family:{beneficiary_id}"


def email_message(campaign: Campaign, *, beneficiary_id: int, recipient: str, sender: str) -> tuple[str, bytes]:
    """One family's e-mail: ``(message_id, bytes)``, the same bytes on every call.

    The Message-ID is derived from the outbox key (:func:`make_message_id`), the Date from the
    campaign date: a re-render after a crash yields the very message that may already be out.
    """
    domain = sender.rsplit("@", 1)[-1]
    message_id = make_message_id(message_key(campaign.exchange_id, beneficiary_id), domain)
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = formataddr((AGENCY, sender))
    message["To"] = recipient
    message["Subject"] = campaign.subject
    message["Date"] = format_datetime(dt.datetime.combine(campaign.campaign_date, dt.time(9, 0), BRUSSELS))
    message["Message-ID"] = message_id
    # Automatic mail: no out-of-office replies back to the agency.
    message["Auto-Submitted"] = "auto-generated"
    message["Content-Language"] = "nl-BE"
    message.set_content(plain_text(campaign), charset="utf-8", cte="quoted-printable")
    return message_id, message.as_bytes()
