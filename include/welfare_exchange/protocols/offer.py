"""The municipality's offer, carried by a ``method2`` protocol: its JSON shape and its check.

The offer is what the families receive, in Dutch. It is checked when the protocol is created
(:func:`validate_offer`, called by :func:`welfare_exchange.protocols.registry.create`), so a
campaign never starts with a text that cannot be sent. Shape (``protocol create --kind method2
--offer-file offer.json``)::

    {
      "title": "Gratis UiTPAS aan kansentarief",            # what, in one line (max 120)
      "what": "Met de UiTPAS betaalt uw gezin ...",          # what the offer is (max 2000)
      "how_to_apply": "Vraag de pas aan in het Sociaal Huis ...",   # how to apply (max 1500)
      "contact": {                                           # who answers questions
        "organisation": "Sociaal Huis Voorbeeldstad",        # required
        "email": "aanbod@voorbeeldstad.example",             # at least one of email,
        "phone": "09 123 45 67",                             #   phone and address
        "address": "Marktplein 1, 9000 Voorbeeldstad"
      },
      "link": "https://www.voorbeeldstad.example/aanbod",   # https only
      "valid_from": "2026-11-01",                            # the family can apply from ...
      "valid_until": "2027-06-30",                           # ... until (inclusive)
      "reference_date": "2026-10-01",                        # families selected on this day
      "subject": "Uw gezin komt in aanmerking voor ..."      # optional e-mail subject
    }

``reference_date`` is the day on which a child must be domiciled in the municipality with a
sociale toeslag for its family to be contacted; it becomes the protocol's ``reference_date``.
The campaign is sent only while the offer is open (``valid_from`` .. ``valid_until``).
Unknown keys are refused (a typo must not silently drop a sentence), and so is anything
INSZ-shaped: the offer is a public text about no one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from welfare_exchange import insz
from welfare_exchange.errors import InputError

TEXT_LIMITS = {"title": 120, "what": 2000, "how_to_apply": 1500, "subject": 150}
CONTACT_KEYS = ("organisation", "email", "phone", "address")
CONTACT_LIMIT = 250
REQUIRED = ("title", "what", "how_to_apply", "contact", "link", "valid_from", "valid_until", "reference_date")
OPTIONAL = ("subject",)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LINK = re.compile(r"^https://[^\s/$.?#][^\s]*$")


def _text(offer: dict[str, Any], key: str, limit: int, where: str = "offer") -> str:
    value = offer.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {key!r} must be a non-empty text")
    value = value.strip()
    if len(value) > limit:
        raise InputError(f"{where}: {key!r} is {len(value)} characters; at most {limit}")
    if insz.find_insz_shaped(value):
        raise InputError(f"{where}: {key!r} contains an INSZ-shaped number; the offer is a public text about no one")
    return value


def _date(offer: dict[str, Any], key: str) -> dt.date:
    value = offer.get(key)
    try:
        return dt.date.fromisoformat(str(value))
    except (TypeError, ValueError):
        raise InputError(f"offer: {key!r} must be a date as YYYY-MM-DD, got {value!r}") from None


def validate_offer(offer: Any) -> dict[str, Any]:
    """Check an offer against the documented shape; returns it normalised (trimmed, ISO dates).

    :param offer: the parsed JSON of the offer file.
    :raises InputError: what is wrong, naming the key — never echoing long texts.
    """
    if not isinstance(offer, dict):
        raise InputError("a method2 protocol needs an offer: give --offer-file with a JSON object (see docs/method2.md)")
    unknown = sorted(set(offer) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError(f"offer: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED + OPTIONAL)}")
    missing = [key for key in REQUIRED if key not in offer]
    if missing:
        raise InputError(f"offer: missing {', '.join(missing)}")
    out: dict[str, Any] = {key: _text(offer, key, limit) for key, limit in TEXT_LIMITS.items() if key in offer}

    contact = offer["contact"]
    if not isinstance(contact, dict):
        raise InputError("offer: 'contact' must be an object with organisation and email, phone or address")
    extra = sorted(set(contact) - set(CONTACT_KEYS))
    if extra:
        raise InputError(f"offer: unknown contact key(s) {', '.join(extra)}; allowed: {', '.join(CONTACT_KEYS)}")
    out["contact"] = {key: _text(contact, key, CONTACT_LIMIT, "offer contact") for key in CONTACT_KEYS if contact.get(key)}
    if "organisation" not in out["contact"]:
        raise InputError("offer contact: 'organisation' is required (who answers the family's questions)")
    if not {"email", "phone", "address"} & set(out["contact"]):
        raise InputError("offer contact: give at least one of email, phone or address")
    if "email" in out["contact"] and not _EMAIL.match(out["contact"]["email"]):
        raise InputError("offer contact: 'email' is not an e-mail address")

    link = _text(offer, "link", 500)
    if not _LINK.match(link):
        raise InputError("offer: 'link' must be an https:// address without spaces")
    out["link"] = link

    valid_from, valid_until, reference = (_date(offer, k) for k in ("valid_from", "valid_until", "reference_date"))
    if valid_until < valid_from:
        raise InputError("offer: 'valid_until' lies before 'valid_from'")
    if reference > valid_until:
        raise InputError("offer: 'reference_date' lies after 'valid_until': no family could still apply")
    out.update(valid_from=valid_from.isoformat(), valid_until=valid_until.isoformat(), reference_date=reference.isoformat())
    return out


def offer_digest(offer: dict[str, Any]) -> str:
    """SHA-256 of the offer's canonical JSON: a changed text is a different campaign."""
    return hashlib.sha256(json.dumps(offer, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def offer_dates(offer: dict[str, Any]) -> tuple[dt.date, dt.date, dt.date]:
    """``(valid_from, valid_until, reference_date)`` of a validated offer."""
    return tuple(dt.date.fromisoformat(offer[k]) for k in ("valid_from", "valid_until", "reference_date"))  # type: ignore[return-value]
