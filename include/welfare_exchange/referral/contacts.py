"""The parent's contact details: sealed at rest with the staging key, opened only to build a list.

Names, addresses, phone numbers and e-mail addresses are the most identifying data a referral
holds. They are stored as one Fernet token per family (AES-128-CBC + HMAC-SHA256, the staging
key of :mod:`welfare_exchange.staging`), so a look into the database, a dump or a backup shows
none of them; they are opened in memory only when a referral list is built for a Sociaal Huis.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from cryptography.fernet import Fernet, InvalidToken

from welfare_exchange.settings import get_settings


@dataclass(frozen=True)
class Contact:
    """Whom the Sociaal Huis contacts. Personal data: never logged (``repr`` shows nothing of it)."""

    name: str
    address_line: str | None = None
    postcode: str | None = None
    city: str | None = None
    phone: str | None = None
    email: str | None = None

    def __repr__(self) -> str:
        return "Contact(<sealed>)"


def _fernet() -> Fernet:
    key = get_settings().staging_key
    if not key:
        raise RuntimeError(
            "WELFARE_EXCHANGE_STAGING_KEY is not set: the parents' contact details cannot be sealed. "
            "`make install` generates one in var/secrets.env; in production it comes from the secrets backend."
        )
    return Fernet(key.encode())


def seal(contact: Contact) -> bytes:
    """The contact details as a token only the staging key opens."""
    return _fernet().encrypt(json.dumps(asdict(contact), separators=(",", ":")).encode("utf-8"))


def unseal(token: bytes) -> Contact:
    try:
        return Contact(**json.loads(_fernet().decrypt(bytes(token))))
    except InvalidToken:
        raise RuntimeError(
            "a referral candidate's contact details cannot be opened with the current staging key "
            "(was WELFARE_EXCHANGE_STAGING_KEY rotated?): import the candidates again"
        ) from None
