"""How an anchor is authenticated outside the project database.

Two independent ways, chosen by ``WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH`` (see the settings):

* **RFC 3161 time-stamp** (``timestamp``): a time-stamping authority signs "this hash existed at
  this time". The message imprint is the chain's head hash itself: the request is made over the
  head record's canonical encoding, whose SHA-256 *is* that hash. The token is checked against
  the TSA certificate(s) configured as trusted (``WELFARE_EXCHANGE_AUDIT_TSA_CERT``), never
  against a certificate the token brings along alone. Requests and verification use
  ``rfc3161-client`` (maintained by the sigstore project).
* **Ed25519 signature** (``signature``): the agency's anchor key
  (``WELFARE_EXCHANGE_AUDIT_SIGNING_KEY``) signs the anchor line; ``audit verify`` needs only
  the public key (``WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY``). The key lives in the secrets
  backend, never in the project database, so a database user cannot sign a forged anchor.

Only the anchoring task talks to the TSA; :func:`welfare_exchange.audit.record` never does.
"""

from __future__ import annotations

import base64
import datetime as dt
import urllib.error
import urllib.request

import rfc3161_client
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from welfare_exchange.settings import get_settings

TSA_TIMEOUT_SECONDS = 30
_TSQ = "application/timestamp-query"
_TSR = "application/timestamp-reply"


class AnchorAuthError(RuntimeError):
    """An anchor cannot be authenticated now (TSA unreachable or refusing, a key missing)."""


class InvalidAuthentication(ValueError):
    """A time-stamp token or signature does not check out (the message says why)."""


# --------------------------------------------------------------------------- RFC 3161


def trusted_tsa_certificates() -> list[x509.Certificate]:
    """The TSA certificate(s) the tokens must chain to (``WELFARE_EXCHANGE_AUDIT_TSA_CERT``)."""
    path = get_settings().audit_tsa_cert
    if path is None:
        raise AnchorAuthError(
            "WELFARE_EXCHANGE_AUDIT_TSA_CERT is not set: time-stamp tokens cannot be checked without the "
            "TSA's certificate (a PEM file; see docs/RUNBOOK.md, 'Anchoring the audit trail')"
        )
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as err:
        raise AnchorAuthError(f"the trusted TSA certificate file {path} cannot be read: {err}") from err


def _verifier(certificates: list[x509.Certificate], builder: rfc3161_client.VerifierBuilder | None = None):
    builder = builder or rfc3161_client.VerifierBuilder()
    for certificate in certificates:
        builder = builder.add_root_certificate(certificate)
    return builder.build()


def request_timestamp(head_encoding: bytes) -> bytes:
    """Ask the configured TSA to time-stamp the head record; returns the checked response (DER).

    Raises :class:`AnchorAuthError` when the TSA is not configured, unreachable, refuses, or
    answers with a token that does not check out: the anchoring task then fails and retries,
    and no unauthenticated anchor is ever written.
    """
    url = get_settings().audit_tsa_url
    if not url:
        raise AnchorAuthError("WELFARE_EXCHANGE_AUDIT_TSA_URL is not set: no time-stamping authority to ask")
    certificates = trusted_tsa_certificates()
    query = (
        rfc3161_client.TimestampRequestBuilder()
        .data(head_encoding)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .cert_request(cert_request=True)
        .build()
    )
    http = urllib.request.Request(url, data=query.as_bytes(), headers={"Content-Type": _TSQ, "Accept": _TSR})
    try:
        with urllib.request.urlopen(http, timeout=TSA_TIMEOUT_SECONDS) as answer:  # noqa: S310 - a configured URL
            body = answer.read()
    except (urllib.error.URLError, OSError) as err:
        raise AnchorAuthError(f"the time-stamping authority at {url} did not answer: {err}") from err
    try:
        response = rfc3161_client.decode_timestamp_response(body)
        _verifier(certificates, rfc3161_client.VerifierBuilder.from_request(query)).verify_message(response, head_encoding)
    except (ValueError, rfc3161_client.VerificationError) as err:
        raise AnchorAuthError(f"the time-stamping authority at {url} gave no valid time-stamp: {err}") from err
    return response.as_bytes()


def check_timestamp(token: str, head_hash: str, certificates: list[x509.Certificate]) -> dt.datetime:
    """Check a stored token (base64 DER) over ``head_hash``; returns the TSA's time."""
    try:
        response = rfc3161_client.decode_timestamp_response(base64.b64decode(token, validate=True))
        _verifier(certificates).verify(response, bytes.fromhex(head_hash))
    except (ValueError, TypeError, rfc3161_client.VerificationError) as err:
        raise InvalidAuthentication(f"its RFC 3161 time-stamp does not check out ({err})") from err
    return response.tst_info.gen_time.astimezone(dt.timezone.utc)


# --------------------------------------------------------------------------- Ed25519


def _hex_key(value: str, name: str) -> bytes:
    try:
        raw = bytes.fromhex(value.strip())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise AnchorAuthError(f"{name} must be 64 hex digits (an Ed25519 key)")
    return raw


def _private_key() -> Ed25519PrivateKey:
    value = get_settings().audit_signing_key
    if not value:
        raise AnchorAuthError(
            "WELFARE_EXCHANGE_AUDIT_SIGNING_KEY is not set: anchors cannot be signed "
            "(scripts/env.sh generates one in var/secrets.env; in production it comes from the secrets backend)"
        )
    return Ed25519PrivateKey.from_private_bytes(_hex_key(value, "WELFARE_EXCHANGE_AUDIT_SIGNING_KEY"))


def public_key() -> Ed25519PublicKey:
    """The anchor key's public half: configured, or derived from the private key."""
    value = get_settings().audit_signing_public_key
    if value:
        return Ed25519PublicKey.from_public_bytes(_hex_key(value, "WELFARE_EXCHANGE_AUDIT_SIGNING_PUBLIC_KEY"))
    return _private_key().public_key()


def sign(payload: bytes) -> str:
    """An Ed25519 signature of ``payload`` with the anchor key, base64."""
    return base64.b64encode(_private_key().sign(payload)).decode("ascii")


def check_signature(payload: bytes, signature: str, key: Ed25519PublicKey) -> None:
    try:
        key.verify(base64.b64decode(signature, validate=True), payload)
    except (InvalidSignature, ValueError, TypeError) as err:
        raise InvalidAuthentication("its signature does not check out with the anchor key") from err


def signing_configured() -> bool:
    settings = get_settings()
    return bool(settings.audit_signing_key or settings.audit_signing_public_key)


def timestamp_configured() -> bool:
    settings = get_settings()
    return bool(settings.audit_tsa_url or settings.audit_tsa_cert)
