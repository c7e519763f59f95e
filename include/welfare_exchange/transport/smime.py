"""S/MIME for the encrypted e-mail channel: open a municipality's request, seal the result.

A protocol with channel ``smime`` ties a municipality to one sender mailbox and the
certificate(s) its DPO exchanged with the agency's DPO. A request arrives as an e-mail
encrypted to the agency's certificate (S/MIME *enveloped-data*, RFC 8551), optionally signed
by the municipality; the result goes back encrypted to the municipality's certificate.

What each side can use:

* **Decrypting** uses ``cryptography`` (``pkcs7_decrypt_der``): RSA PKCS#1 v1.5 key transport
  with AES-128-CBC or AES-256-CBC content encryption. Everything else — 3DES (the default of
  ``openssl smime -encrypt`` without a cipher option), RC2, DES, AES-GCM (auth-enveloped data),
  RSA-OAEP key transport — is detected in the ASN.1 *before* decrypting and refused with an
  error that tells the municipality what to change.
* Mail clients and ``openssl … -stream`` write the envelope as BER with indefinite lengths and
  chunked content; ``cryptography`` only parses DER, so :func:`inspect_envelope` reads it with
  asn1crypto and re-encodes it as DER first. A recipient identified by subject key identifier
  (``openssl cms -encrypt -keyid``) is rewritten to issuer-and-serial of the agency's
  certificate, which is what ``cryptography`` can match.
* **Signatures** (inside the envelope, the usual sign-then-encrypt, or outside it) are verified
  with the OpenSSL command line (``openssl cms -verify``), fed through pipes so no plaintext
  touches the disk. ``cryptography`` has no PKCS#7 verification, and verifying clear-signed
  MIME correctly (canonical line endings of the signed part, with or without signed
  attributes) is exactly what OpenSSL's implementation is trusted for. Trust is by pinning,
  not by chain: the signer must be one of the certificates registered in the protocol
  (``-noverify`` skips only the chain building; the signature and content digest are still
  checked).
* **Encrypting** uses ``PKCS7EnvelopeBuilder`` with AES-256-CBC; the result decrypts with
  ``openssl smime -decrypt`` and every mail client.

Note for municipalities using the OpenSSL command line: ``openssl smime -encrypt`` without
``-binary`` rewrites line endings of the input and damages binary files such as .xlsx before
encrypting them; the instructions must say ``openssl smime -encrypt -aes256 -binary``.

Every error is a :class:`SmimeError` (an :class:`~welfare_exchange.errors.InputError`) with a
``code`` for the audit and a message an operator can act on; no message contains an e-mail
address (only its domain), a file name or any content.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.utils import formatdate, getaddresses, parseaddr

from asn1crypto import cms, core
from asn1crypto import parser as asn1_parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from welfare_exchange.errors import InputError
from welfare_exchange.settings import DEFAULTS

#: Largest message accepted, in bytes. A 200,000-row request is ~6 MB as .xlsx; S/MIME makes
#: a message ~1.9x its attachment, and many mail servers cap messages at 25 MB anyway.
DEFAULT_MAX_MESSAGE_BYTES = int(DEFAULTS["WELFARE_EXCHANGE_MAIL_MAX_BYTES"] or 0)  # 25 MiB, one default in settings

#: Days before expiry from which a certificate gives a warning.
EXPIRY_WARNING_DAYS = 30

SMIME_ERROR_CODES = frozenset(
    {
        "unknown_sender",
        "unknown_certificate",
        "expired_certificate",
        "unsupported_cipher",
        "too_large",
        "no_attachment",
        "several_attachments",
        "not_smime",
        "bad_signature",
        "decrypt_failed",
    }
)


class SmimeError(InputError):
    """An e-mail that cannot be accepted, or a certificate that cannot be used.

    :param message: what went wrong and what to do; never personal data or content.
    :param code: one of :data:`SMIME_ERROR_CODES`, recorded in the audit.
    """

    code = "smime"

    def __init__(self, message: str, *, code: str) -> None:
        if code not in SMIME_ERROR_CODES:
            raise ValueError(f"unknown S/MIME error code {code!r}")
        super().__init__(message, code=code)


@dataclass(frozen=True)
class DecryptedMessage:
    """A request e-mail after decryption and checks.

    :param sender: bare From address, lower-cased.
    :param message_id: the Message-ID header (with angle brackets), or ``None``.
    :param attachments: ``(filename, content)`` pairs; exactly one after :func:`decrypt`.
        ``filename`` is ``None`` when the sender encrypted a bare file rather than a MIME
        message (what ``openssl smime -encrypt -in file.xlsx`` does).
    :param signed_by: the certificate whose signature was verified, or ``None`` if unsigned.
    :param cipher: the content-encryption algorithm, e.g. ``"aes-256-cbc"``.
    """

    sender: str
    message_id: str | None
    attachments: list[tuple[str | None, bytes]] = field(repr=False)
    signed_by: x509.Certificate | None
    cipher: str

    @property
    def attachment(self) -> bytes:
        """The content of the single attachment."""
        return self.attachments[0][1]


# --------------------------------------------------------------------------------------------
# Certificates


def load_certificate(pem_or_der: str | bytes) -> x509.Certificate:
    """Load an X.509 certificate from PEM text/bytes or DER bytes.

    :param pem_or_der: e.g. the ``certificate`` extra of an Airflow connection.
    """
    data = pem_or_der.encode("ascii") if isinstance(pem_or_der, str) else bytes(pem_or_der)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SmimeError(
            "the certificate could not be read (expected PEM or DER X.509): check the "
            "certificate stored in the protocol or the Airflow connection",
            code="unknown_certificate",
        ) from exc


def load_private_key(pem: str | bytes, password: str | bytes | None = None) -> rsa.RSAPrivateKey:
    """Load the agency's RSA private key from PEM.

    :param pem: PEM text (PKCS#8 or traditional), e.g. from an Airflow connection's extra.
    :param password: its passphrase, if the key is encrypted.
    """
    data = pem.encode("ascii") if isinstance(pem, str) else bytes(pem)
    secret = password.encode("utf-8") if isinstance(password, str) else password
    key = serialization.load_pem_private_key(data, password=secret or None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the agency's S/MIME key must be an RSA key (S/MIME key transport needs RSA)")
    return key


def _describe(cert: x509.Certificate) -> str:
    """Name a certificate in messages without personal data: fingerprint prefix and domain.

    The colon-separated fingerprint (as ``openssl x509 -fingerprint -sha256`` prints it)
    never forms a digit run that the INSZ log scanner could mistake for a number.
    """
    fingerprint = ":".join(f"{b:02X}" for b in bytes.fromhex(certificate_fingerprint(cert))[:8])
    domains = sorted({address.rpartition("@")[2] for address in certificate_emails(cert)})
    where = f" for @{', @'.join(domains)}" if domains else ""
    return f"certificate SHA-256 {fingerprint}…{where}"


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """The e-mail addresses a certificate is issued for (SAN rfc822Name, else subject E=).

    :param cert: any X.509 certificate.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addresses = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        addresses = []
    if not addresses:
        addresses = [
            str(attribute.value) for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
        ]
    return [address.lower() for address in addresses]


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint (hex) of the certificate's DER, the value to pin and audit."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _validity(cert: x509.Certificate) -> tuple[dt.date, dt.date]:
    return cert.not_valid_before_utc.date(), cert.not_valid_after_utc.date()


def certificate_expiry_warning(
    cert: x509.Certificate, today: dt.date, days: int = EXPIRY_WARNING_DAYS
) -> str | None:
    """A warning when ``cert`` expires within ``days`` of ``today`` (or already has), else ``None``.

    The DAG writes the warning to the audit and the task log so that the DPOs exchange a new
    certificate before requests start being refused.

    :param cert: the agency's or a municipality's certificate.
    :param today: the exchange's logical date (not the wall clock, so re-runs agree).
    :param days: how far ahead to warn.
    """
    not_after = cert.not_valid_after_utc.date()
    left = (not_after - today).days
    if left < 0:
        return (
            f"the {_describe(cert)} expired on {not_after.isoformat()}: messages signed with it "
            "are refused and nothing can be encrypted to it; the DPOs must exchange a new "
            "certificate and register it in the protocol"
        )
    if left <= days:
        return (
            f"the {_describe(cert)} expires on {not_after.isoformat()}, in {left} day(s): ask "
            "for a renewed certificate and register it in the protocol before then"
        )
    return None


def _check_valid(cert: x509.Certificate, today: dt.date, role: str) -> None:
    not_before, not_after = _validity(cert)
    if today > not_after:
        raise SmimeError(
            f"the {role} {_describe(cert)} expired on {not_after.isoformat()}: the DPOs must "
            "exchange a new certificate and register it in the protocol",
            code="expired_certificate",
        )
    if today < not_before:
        raise SmimeError(
            f"the {role} {_describe(cert)} is only valid from {not_before.isoformat()}: check "
            "the certificate registered in the protocol",
            code="unknown_certificate",
        )


# --------------------------------------------------------------------------------------------
# Encrypting


def encrypt(
    payload: bytes,
    recipient_cert: x509.Certificate,
    *,
    filename: str,
    subject: str,
    sender: str,
    to: str,
    message_id: str,
    body_text: str = "The file is attached to this encrypted message.\r\n",
    content_type: str = "application/octet-stream",
    date: dt.datetime | None = None,
    today: dt.date | None = None,
) -> bytes:
    """Build a complete e-mail with ``payload`` as attachment, S/MIME-encrypted with AES-256-CBC.

    The attachment travels inside the envelope in a ``multipart/mixed`` entity (a short text
    part and the file, base64), so the file name is encrypted too; only From, To, Subject,
    Date and Message-ID are visible. Decrypts with ``openssl smime -decrypt`` and any S/MIME
    mail client.

    :param payload: the file to send (e.g. the password-encrypted result .xlsx).
    :param recipient_cert: the municipality's certificate registered in the protocol.
    :param filename: the attachment's file name (inside the envelope).
    :param subject: the visible subject; must not contain personal data.
    :param sender: the agency's From address.
    :param to: the municipality's address.
    :param message_id: from :func:`welfare_exchange.transport.mail.make_message_id`, so that
        a re-run produces the same message and the ledger can recognise it.
    :param body_text: the text part next to the attachment.
    :param content_type: MIME type of the attachment.
    :param date: the Date header (now by default).
    :param today: the day the certificate must be valid on (today by default).
    :raises SmimeError: ``expired_certificate`` / ``unknown_certificate`` when the
        recipient's certificate cannot be used.
    """
    today = today or dt.date.today()
    _check_valid(recipient_cert, today, "municipality's")
    if not isinstance(recipient_cert.public_key(), rsa.RSAPublicKey):
        raise SmimeError(
            f"the municipality's {_describe(recipient_cert)} has no RSA key; S/MIME encryption "
            "here needs an RSA certificate: ask the municipality for one",
            code="unknown_certificate",
        )

    inner = EmailMessage(policy=email.policy.SMTP)
    inner.set_content(body_text)
    maintype, _, subtype = content_type.partition("/")
    inner.add_attachment(payload, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    # SMTP policy: CRLF line endings, the canonical form S/MIME encrypts (Binary option below
    # then keeps OpenSSL-style translation from touching anything).
    inner_bytes = inner.as_bytes(policy=email.policy.SMTP)
    envelope = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(inner_bytes)
        .set_content_encryption_algorithm(algorithms.AES256)
        .add_recipient(recipient_cert)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )

    outer = EmailMessage(policy=email.policy.SMTP)
    outer["From"] = sender
    outer["To"] = to
    outer["Subject"] = subject
    outer["Date"] = formatdate((date or dt.datetime.now(dt.timezone.utc)).timestamp(), usegmt=True)
    outer["Message-ID"] = message_id
    outer["MIME-Version"] = "1.0"
    outer.set_content(
        envelope,
        maintype="application",
        subtype="pkcs7-mime",
        params={"smime-type": "enveloped-data", "name": "smime.p7m"},
        disposition="attachment",
        filename="smime.p7m",
    )
    return outer.as_bytes(policy=email.policy.SMTP)


# --------------------------------------------------------------------------------------------
# Reading envelopes (the ASN.1 is asn1crypto's; the decisions are ours)

OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"

#: Content-encryption algorithms ``cryptography`` decrypts.
SUPPORTED_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": "aes-128-cbc",
    "2.16.840.1.101.3.4.1.42": "aes-256-cbc",
}
#: Ones we recognise in order to say precisely what arrived.
KNOWN_UNSUPPORTED_CIPHERS = {
    "1.2.840.113549.3.7": "3des",
    "1.3.14.3.2.7": "des-cbc",
    "1.2.840.113549.3.2": "rc2-cbc",
    "2.16.840.1.101.3.4.1.22": "aes-192-cbc",
    "2.16.840.1.101.3.4.1.6": "aes-128-gcm",
    "2.16.840.1.101.3.4.1.26": "aes-192-gcm",
    "2.16.840.1.101.3.4.1.46": "aes-256-gcm",
}
_RESEND_HINT = (
    "ask the municipality to send with AES-256-CBC (openssl: smime -encrypt -aes256 -binary; "
    "mail clients: choose AES-256 in the S/MIME settings)"
)
#: What asn1crypto raises for input it cannot parse (it parses lazily, on first access);
#: TypeError when a part the structure needs is missing.
_ASN1_ERRORS = (ValueError, TypeError)


@dataclass(frozen=True)
class EnvelopeInfo:
    """What the ASN.1 of an envelope says, read before any decryption.

    :param cipher: content-encryption algorithm name (``"aes-256-cbc"``, ``"3des"``, or the
        OID when unknown).
    :param cipher_oid: its object identifier.
    :param key_transport_oids: key-encryption algorithm of each recipient.
    :param der: the envelope re-encoded as DER, with recipient identifiers that
        ``cryptography`` can match.
    """

    cipher: str
    cipher_oid: str
    key_transport_oids: tuple[str, ...]
    der: bytes = field(repr=False)


def _load_content_info(data: bytes) -> cms.ContentInfo:
    """A BER or DER ContentInfo; after it only padding (NULs, line ends, spaces) may follow."""
    header, contents, trailer = asn1_parser.parse(data)[3:]
    end = len(header) + len(contents) + len(trailer)
    if data[end:].strip(b"\x00\r\n "):
        raise ValueError("trailing data after the ContentInfo")
    return cms.ContentInfo.load(data[:end], strict=True)


class _Chunks(core.SequenceOf):
    """The pieces of a BER string sent in chunks (``openssl … -stream`` and mail clients do)."""

    _child_spec = core.OctetString


def _joined(value: core.OctetString) -> bytes:
    """The octets of a string sent in BER chunks, joined in linear time.

    asn1crypto's own join concatenates chunk by chunk: quadratic, seconds for a 12 MB request.
    """
    return b"".join(chunk.native for chunk in _Chunks(contents=value.contents))


def _agency_recipient(agency_cert: x509.Certificate) -> cms.RecipientIdentifier:
    """The agency's certificate as issuer and serial number, the identifier ``cryptography`` matches."""
    issuer_and_serial = cms.IssuerAndSerialNumber(
        {"issuer": asn1_x509.Name.load(agency_cert.issuer.public_bytes()), "serial_number": agency_cert.serial_number}
    )
    return cms.RecipientIdentifier(name="issuer_and_serial_number", value=issuer_and_serial)


def _is_agency(rid: cms.RecipientIdentifier, agency_cert: x509.Certificate) -> bool:
    """Whether a recipient identifier (issuer and serial, or subject key identifier) names the agency."""
    if rid.name == "issuer_and_serial_number":
        return (
            rid.chosen["issuer"].dump() == agency_cert.issuer.public_bytes()
            and rid.chosen["serial_number"].native == agency_cert.serial_number
        )
    try:  # [0] subjectKeyIdentifier (openssl cms -encrypt -keyid)
        agency_ski = agency_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        agency_ski = x509.SubjectKeyIdentifier.from_public_key(agency_cert.public_key()).digest
    return rid.chosen.native == agency_ski


def inspect_envelope(data: bytes, agency_cert: x509.Certificate) -> EnvelopeInfo:
    """Read an S/MIME envelope's algorithms and recipients without decrypting it.

    :param data: the BER or DER ContentInfo (the decoded ``smime.p7m``).
    :param agency_cert: the agency's certificate; one recipient must be it.
    :raises SmimeError: ``not_smime`` for something that is no envelope,
        ``unsupported_cipher`` for 3DES, GCM, OAEP and the like, ``unknown_certificate``
        when the message was encrypted for a different certificate.
    """
    try:
        content_info = _load_content_info(data)
        content_type = content_info["content_type"].dotted
    except _ASN1_ERRORS as exc:
        raise SmimeError(
            "the smime.p7m part is not a readable CMS/PKCS#7 structure: the message is damaged "
            "or not S/MIME; ask the municipality to send it again",
            code="not_smime",
        ) from exc
    if content_type == OID_AUTH_ENVELOPED_DATA:
        raise SmimeError(
            f"the message is encrypted with AES-GCM (authenticated envelope), which the agency "
            f"cannot decrypt yet; {_RESEND_HINT}",
            code="unsupported_cipher",
        )
    if content_type != OID_ENVELOPED_DATA:
        raise SmimeError(
            "the smime.p7m part is not an encrypted envelope (enveloped-data): ask the "
            "municipality to encrypt the message to the agency's certificate",
            code="not_smime",
        )
    malformed = SmimeError(
        "the encrypted envelope is malformed: ask the municipality to send the message again",
        code="not_smime",
    )
    try:
        enveloped = content_info["content"]
        recipient_infos = list(enveloped["recipient_infos"])
        encrypted_content_info = enveloped["encrypted_content_info"]
        cipher_oid = encrypted_content_info["content_encryption_algorithm"]["algorithm"].dotted
    except _ASN1_ERRORS as exc:
        raise malformed from exc

    cipher = SUPPORTED_CIPHERS.get(cipher_oid) or KNOWN_UNSUPPORTED_CIPHERS.get(cipher_oid, cipher_oid)
    if cipher == "3des":
        raise SmimeError(
            "the message is encrypted with 3DES (OpenSSL's default); ask the municipality to "
            "send with -aes256 (openssl smime -encrypt -aes256 -binary …, or AES-256 in the "
            "mail client's S/MIME settings)",
            code="unsupported_cipher",
        )
    if cipher_oid not in SUPPORTED_CIPHERS:
        raise SmimeError(
            f"the message is encrypted with {cipher}, which the agency does not accept; {_RESEND_HINT}",
            code="unsupported_cipher",
        )

    key_transports: list[str] = []
    ours: cms.KeyTransRecipientInfo | None = None
    damaged = False
    for recipient in recipient_infos:
        try:
            if recipient.name != "ktri":  # key agreement (EC), KEK, password, other
                continue
            key_transport = recipient.chosen["key_encryption_algorithm"]["algorithm"].dotted
            matches = _is_agency(recipient.chosen["rid"], agency_cert)
        except _ASN1_ERRORS:
            damaged = True
            continue
        key_transports.append(key_transport)
        if matches:
            ours = recipient.chosen
            break
    if ours is None and damaged:
        raise malformed
    if ours is None:
        raise SmimeError(
            f"the message is not encrypted for the agency's current {_describe(agency_cert)}: "
            "ask the municipality to encrypt to the certificate it received with the protocol "
            "(it may still use an old or another organisation's certificate)",
            code="unknown_certificate",
        )
    if key_transport == OID_RSAES_OAEP:
        raise SmimeError(
            "the message's key is wrapped with RSA-OAEP, which the agency cannot unwrap yet; "
            "ask the municipality to send with the default RSA PKCS#1 v1.5 key transport "
            "(openssl: leave out -keyopt rsa_padding_mode:oaep)",
            code="unsupported_cipher",
        )
    if key_transport != OID_RSA_ENCRYPTION:
        raise SmimeError(
            f"the message's key is wrapped with algorithm {key_transport}, which the agency "
            "does not accept; ask the municipality to send with RSA PKCS#1 v1.5 key transport",
            code="unsupported_cipher",
        )
    try:
        if ours["rid"].name != "issuer_and_serial_number":
            # cryptography matches recipients by issuer and serial only: say the same thing in
            # the form it understands, with the version numbers that go with it.
            ours["rid"] = _agency_recipient(agency_cert)
            ours["version"] = "v0"
            enveloped["version"] = "v0"
        # cryptography parses only the key-transport recipient it can use: drop the others.
        enveloped["recipient_infos"] = cms.RecipientInfos([ours])
        # DER: definite lengths, and the ciphertext in one piece rather than BER chunks.
        if encrypted_content_info["encrypted_content"].method == 1:
            encrypted_content_info["encrypted_content"] = _joined(encrypted_content_info["encrypted_content"])
        der = content_info.dump(force=True)
    except _ASN1_ERRORS as exc:
        raise malformed from exc
    return EnvelopeInfo(
        cipher=cipher,
        cipher_oid=cipher_oid,
        key_transport_oids=tuple(key_transports),
        der=der,
    )


# --------------------------------------------------------------------------------------------
# Decrypting


def _content_type(part: Message) -> str:
    return part.get_content_type().lower()


_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")


def _smime_type(part: Message) -> str:
    """``smime-type`` of a pkcs7-mime part; read from the ASN.1 when the header omits it."""
    declared = (part.get_param("smime-type") or "").lower()
    if declared:
        return declared
    try:
        content_type = cms.ContentInfo.load(bytes(part.get_payload(decode=True) or b""))["content_type"].dotted
    except _ASN1_ERRORS:
        return ""
    return {OID_SIGNED_DATA: "signed-data", OID_ENVELOPED_DATA: "enveloped-data"}.get(content_type, "")


def _layer(part: Message) -> str | None:
    """``"signed"``, ``"enveloped"`` or ``None`` (content) for one MIME layer of a message."""
    ctype = _content_type(part)
    if ctype == "multipart/signed":
        return "signed"
    filename = (part.get_filename() or part.get_param("name") or "").lower()
    # Some clients label a .p7m as application/octet-stream: the ASN.1 then says what it is.
    if ctype in _PKCS7_MIME or (ctype == "application/octet-stream" and filename.endswith(".p7m")):
        return "signed" if _smime_type(part) == "signed-data" else "enveloped"
    return None


def _looks_like_mime(data: bytes) -> bool:
    """True when decrypted content is a MIME entity rather than a bare file.

    ``openssl smime -encrypt -in file`` encrypts the file's bytes as they are; mail clients
    encrypt a MIME entity. A MIME entity starts with a header block that has Content-Type.
    """
    head = data[:8192]
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=-1)
    if end < 0:
        return False
    try:
        text = head[:end].decode("ascii")
    except UnicodeDecodeError:
        return False
    lines = text.replace("\r\n", "\n").split("\n")
    for line in lines:
        if line[:1] in (" ", "\t"):
            continue  # folded header continuation
        name, colon, _ = line.partition(":")
        if not colon or not name or any(c.isspace() for c in name):
            return False
    return any(line.lower().startswith("content-type:") for line in lines)


def _openssl() -> str:
    path = shutil.which("openssl")
    if not path:
        raise RuntimeError(
            "the openssl command is needed to verify S/MIME signatures but is not installed: "
            "install the Debian package 'openssl' on every worker"
        )
    return path


def _verify_signature(
    entity: bytes, sender_certificates: Sequence[x509.Certificate], opaque: bool
) -> tuple[bytes, x509.Certificate]:
    """Verify a signed S/MIME entity with ``openssl cms -verify``; return (content, signer).

    Plaintext goes through pipes only; the temporary folder holds certificates (public).
    """
    with tempfile.TemporaryDirectory(prefix="smime-verify-") as tmp:
        signer_path = os.path.join(tmp, "signer.pem")
        command = [_openssl(), "cms", "-verify", "-noverify", "-inform", "SMIME", "-signer", signer_path]
        if sender_certificates:
            pinned_path = os.path.join(tmp, "pinned.pem")
            with open(pinned_path, "wb") as handle:
                for cert in sender_certificates:
                    handle.write(cert.public_bytes(serialization.Encoding.PEM))
            # Lets messages signed without embedded certificates (-nocerts) verify too.
            command += ["-certfile", pinned_path]
        # Clear-signed text is hashed in canonical form (CRLF line ends) first, as S/MIME
        # requires; a signer that signed the exact bytes (-binary) only verifies untranslated.
        # Either success proves the signature covers the content returned. Opaque content
        # (inside the DER) is always returned untranslated: it may be a bare binary file.
        attempts = [command + ["-binary"]] if opaque else [command, command + ["-binary"]]
        for attempt in attempts:
            result = subprocess.run(attempt, input=entity, capture_output=True, timeout=120, check=False)
            if result.returncode == 0 and os.path.exists(signer_path):
                break
        else:
            # OpenSSL's reason (e.g. "verification failure") holds no content.
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
            errors = [line.split(":") for line in lines if ":error:" in line]
            reason = errors[0][5] if errors and len(errors[0]) > 5 else "verification failed"
            if "signer certificate not found" in reason:
                raise SmimeError(
                    "the message is signed, but the signer's certificate is neither in the message "
                    "nor registered in the protocol: register the municipality's certificate or "
                    "ask it to sign with the registered one",
                    code="unknown_certificate",
                )
            raise SmimeError(
                "the message's S/MIME signature does not verify (the message was changed after "
                "signing, or the signature is damaged): ask the municipality to send it again "
                f"[openssl: {reason[:120]}]",
                code="bad_signature",
            )
        with open(signer_path, "rb") as handle:
            signers = x509.load_pem_x509_certificates(handle.read())
    return result.stdout, signers[0]


def _parse_entity(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def _attachments(entity: Message) -> list[tuple[str | None, bytes]]:
    """Attachments of a decrypted MIME entity: every leaf part that is not message text."""
    found: list[tuple[str | None, bytes]] = []
    for part in entity.walk():
        if part.is_multipart():
            continue
        disposition = (part.get_content_disposition() or "").lower()
        filename = part.get_filename()
        maintype = part.get_content_maintype().lower()
        is_body_text = maintype == "text" and disposition != "attachment" and not filename
        if is_body_text:
            continue
        payload = part.get_payload(decode=True)
        found.append((filename, bytes(payload or b"")))
    return found


def _normalise_senders(expected: str | Iterable[str] | None) -> set[str] | None:
    if expected is None:
        return None
    values = [expected] if isinstance(expected, str) else list(expected)
    return {parseaddr(v)[1].lower() for v in values if parseaddr(v)[1]}


def _domain(address: str) -> str:
    return "@" + address.rpartition("@")[2] if "@" in address else "an address without a domain"


def decrypt(
    message_bytes: bytes,
    agency_cert: x509.Certificate,
    agency_key: rsa.RSAPrivateKey,
    *,
    expected_senders: str | Iterable[str] | None = None,
    sender_certificates: Sequence[x509.Certificate] = (),
    require_signature: bool = False,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    today: dt.date | None = None,
) -> DecryptedMessage:
    """Open a request e-mail: check it, decrypt it, verify signatures, return its one attachment.

    Checks, in order: size; sender address against the protocol; S/MIME structure and
    algorithms (before decrypting); the recipient is the agency's certificate; decryption;
    every signature (inside or outside the envelope) against the registered certificates;
    certificate validity; exactly one attachment.

    :param message_bytes: the whole message as fetched over IMAP (RFC 5322 bytes).
    :param agency_cert: the agency's certificate the message must be encrypted to.
    :param agency_key: its private key.
    :param expected_senders: the From address(es) the protocol registers; ``None`` skips the
        check (only for tools; the DAG always passes the protocol's address).
    :param sender_certificates: the municipality's certificates registered in the protocol. A
        signature must come from one of them; when the message is unsigned, at least one must
        still be valid (the result is encrypted to it).
    :param require_signature: refuse unsigned messages (when the protocol demands signing).
    :param max_bytes: largest accepted message.
    :param today: the day certificates must be valid on (the exchange's logical date).
    :raises SmimeError: with ``code`` in :data:`SMIME_ERROR_CODES`.
    """
    today = today or dt.date.today()
    if len(message_bytes) > max_bytes:
        raise SmimeError(
            f"the message is {len(message_bytes) / 1_048_576:.1f} MiB, more than the "
            f"{max_bytes / 1_048_576:.1f} MiB accepted: ask the municipality to split the "
            "request or to send it over SFTP",
            code="too_large",
        )
    outer = _parse_entity(message_bytes)
    addresses = [a.lower() for _, a in getaddresses(outer.get_all("From", [])) if a]
    sender = addresses[0] if len(addresses) == 1 else ""
    message_id = (outer.get("Message-ID") or "").strip() or None
    allowed = _normalise_senders(expected_senders)
    if allowed is not None and sender not in allowed:
        shown = _domain(sender) if sender else "no single From address"
        raise SmimeError(
            f"the message comes from {shown}, which is not the mailbox registered in the "
            "protocol: check the protocol's sender address or ask the municipality to send from it",
            code="unknown_sender",
        )

    entity_bytes = message_bytes
    entity: Message | None = outer
    cipher: str | None = None
    signers: list[x509.Certificate] = []
    # Layers: signed(enveloped(signed(content))) at most; a deeper nesting is not a request.
    for _ in range(4):
        if entity is None:
            break
        layer = _layer(entity)
        if layer == "signed":
            opaque = _content_type(entity) != "multipart/signed"
            entity_bytes, signer = _verify_signature(entity_bytes, sender_certificates, opaque)
            signers.append(signer)
        elif layer == "enveloped":
            if cipher is not None:
                break  # an envelope inside the envelope: treat as content (refused below)
            payload = entity.get_payload(decode=True)
            if not payload:
                raise SmimeError(
                    "the smime.p7m part is empty: ask the municipality to send the message again",
                    code="not_smime",
                )
            info = inspect_envelope(bytes(payload), agency_cert)
            try:
                entity_bytes = pkcs7.pkcs7_decrypt_der(info.der, agency_cert, agency_key, [])
            except UnsupportedAlgorithm as exc:
                raise SmimeError(
                    f"the message uses an encryption the agency cannot decrypt; {_RESEND_HINT}",
                    code="unsupported_cipher",
                ) from exc
            except ValueError as exc:
                raise SmimeError(
                    "the message could not be decrypted with the agency's key (damaged in "
                    "transit, or encrypted with another key that has the same certificate "
                    "details): ask the municipality to send it again",
                    code="decrypt_failed",
                ) from exc
            cipher = info.cipher
        else:
            break
        entity = _parse_entity(entity_bytes) if _looks_like_mime(entity_bytes) else None

    if cipher is None:
        raise SmimeError(
            "the message is not S/MIME-encrypted: requests must be encrypted to the agency's "
            "certificate (openssl smime -encrypt -aes256 -binary, or the mail client's "
            "'encrypt' option); the message was not processed",
            code="not_smime",
        )
    if require_signature and not signers:
        raise SmimeError(
            "the message is not signed, but the protocol requires an S/MIME signature: ask the "
            "municipality to sign and encrypt the request",
            code="bad_signature",
        )
    pinned = {certificate_fingerprint(c) for c in sender_certificates}
    for signer in signers:
        if sender_certificates and certificate_fingerprint(signer) not in pinned:
            raise SmimeError(
                f"the message is signed with {_describe(signer)}, which is not registered in the "
                "protocol: register the municipality's new certificate or ask it to sign with "
                "the registered one",
                code="unknown_certificate",
            )
        emails = certificate_emails(signer)
        if sender and emails and sender not in emails:
            raise SmimeError(
                f"the message from {_domain(sender)} is signed with a certificate issued for "
                "another address: ask the municipality to sign with the certificate of the "
                "sending mailbox",
                code="unknown_certificate",
            )
        _check_valid(signer, today, "signing")
    if not signers and sender_certificates:
        valid = [c for c in sender_certificates if _validity(c)[0] <= today <= _validity(c)[1]]
        if not valid:
            _check_valid(max(sender_certificates, key=lambda c: c.not_valid_after_utc), today, "municipality's")

    if entity is None:
        attachments: list[tuple[str | None, bytes]] = [(None, entity_bytes)] if entity_bytes else []
    else:
        attachments = _attachments(entity)
    if not attachments:
        raise SmimeError(
            "the decrypted message has no attachment: ask the municipality to attach the "
            "request file and send again",
            code="no_attachment",
        )
    if len(attachments) > 1:
        raise SmimeError(
            f"the decrypted message has {len(attachments)} attachments; a request carries exactly "
            "one file: ask the municipality to send one message per request file",
            code="several_attachments",
        )
    return DecryptedMessage(
        sender=sender,
        message_id=message_id,
        attachments=attachments,
        signed_by=signers[-1] if signers else None,
        cipher=cipher,
    )
