"""How a string a municipality supplied may be shown: only as a handle.

A municipality names its files, sheets, columns, e-mail subjects, sender display names and
attachments, and any of them may hold personal data — a child's INSZ, a parent's name. Such a
string never reaches a log line, an XCom value, an exception, an audit message, the UI or a
report; what appears instead is its handle, ``#`` and the first 12 hex characters of
:func:`handle`: enough for an operator who has the file to recognise it, nothing for anyone
else. :func:`shown` is the one place that decides this.

The handle is keyed (HMAC-SHA256 with the audit key, separated from the audit's own use of
it): a plain hash of an 11-digit number or of a common name is reversed by trying them all.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re

from welfare_exchange.settings import get_settings

_DOMAIN = b"welfare-exchange untrusted string\x00"
#: Names the agency gives its own files: fixed words, and digit runs too short to be an INSZ.
_AGENCY_NAME = re.compile(
    r"groeipakket_(?:resultaat|structureel|validatierapport|inbox-melding)"
    r"(?:_(?:\d{1,10}|\d{4}-\d{2}-\d{2}|exchange-\d{1,9}|p\d{1,9}|[0-9a-f]{12}))+\.(?:xlsx|txt)"
)


def handle(text: str) -> str:
    """An opaque stand-in for ``text`` (64 hex characters), the same for the same string.

    Keyed with ``WELFARE_EXCHANGE_AUDIT_HMAC_KEY`` when it is set (every deployment sets it:
    the audit refuses to run without it); a plain SHA-256 otherwise, e.g. in a bare CLI check.
    """
    data = _DOMAIN + text.encode("utf-8", "surrogatepass")
    key = get_settings().audit_hmac_key
    if key:
        return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def is_agency_name(name: str) -> bool:
    """True for a file name the agency made (results, feeds, validation reports)."""
    return _AGENCY_NAME.fullmatch(name) is not None


def shown(text: str | None) -> str:
    """How an untrusted string appears anywhere outside the database: ``#`` + 12 hex characters.

    The agency's own file names (:func:`is_agency_name`) are shown as they are.
    """
    if text is None:
        return "(none)"
    if is_agency_name(text):
        return text
    return f"#{handle(text)[:12]}"


def shown_path(path: str) -> str:
    """A remote path whose folders are the agency's (``inbox/``, ``received/``, …) and whose last
    part a municipality may have named: ``received/#1a2b3c4d5e6f``."""
    directory, base = posixpath.split(path)
    return posixpath.join(directory, shown(base)) if directory else shown(base)
