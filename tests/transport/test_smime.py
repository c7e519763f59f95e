"""S/MIME: requests made by a real client (the OpenSSL command line) and our own messages.

Every refusal is checked for its code and for a message that says what to do and leaks
neither the sender's mailbox name, nor the file name, nor content.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import os
import re
from email.message import EmailMessage

import hypothesis
import pytest
from hypothesis import strategies as st

from welfare_exchange.errors import InputError
from welfare_exchange.transport import smime
from tests.fixtures.mail import AGENCY_ADDRESS, GENT_ADDRESS

TODAY = dt.date.today()
REQUEST_NAME = "aanvraag-44021.xlsx"


@pytest.fixture
def request_file(tmp_path):
    """A small binary stand-in for an encrypted .xlsx: zip magic, then every byte value."""
    data = b"PK\x03\x04" + bytes(range(256)) * 8 + os.urandom(512) + b"\n\r\n\x00"
    path = tmp_path / REQUEST_NAME
    path.write_bytes(data)
    return path


def _keys(pki):
    return pki.agency.certificate, pki.agency.private_key


def _open(pki, message: bytes, **kwargs) -> smime.DecryptedMessage:
    kwargs.setdefault("expected_senders", GENT_ADDRESS)
    kwargs.setdefault("sender_certificates", [pki.gent.certificate])
    kwargs.setdefault("today", TODAY)
    return smime.decrypt(message, *_keys(pki), **kwargs)


def _refused(pki, message: bytes, code: str, **kwargs) -> smime.SmimeError:
    with pytest.raises(smime.SmimeError) as caught:
        _open(pki, message, **kwargs)
    error = caught.value
    assert error.code == code, str(error)
    assert isinstance(error, InputError)
    text = str(error)
    for secret in ("dpo@", REQUEST_NAME, "PK\x03\x04"):
        assert secret not in text
    return error


def _with_headers(body: bytes, sender: str = GENT_ADDRESS, message_id: str = "<req-1@gent.test>") -> bytes:
    """Put mail headers on what ``openssl smime|cms -encrypt`` wrote (it writes only MIME ones)."""
    head = f"From: {sender}\r\nTo: {AGENCY_ADDRESS}\r\nSubject: aanvraag\r\nMessage-ID: {message_id}\r\n"
    return head.encode() + body


def _mime_request(*attachments: tuple[str, bytes], text: str = "Zie bijlage.\n") -> bytes:
    """What a mail client encrypts: a MIME entity with a text part and attachments."""
    inner = EmailMessage()
    inner.set_content(text)
    for name, data in attachments:
        inner.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return inner.as_bytes(policy=email.policy.SMTP)


def _encrypt_with_openssl(openssl, pki, tmp_path, content: bytes, *options: str, command: str = "smime") -> bytes:
    source = tmp_path / "content.bin"
    source.write_bytes(content)
    return _with_headers(
        openssl(command, "-encrypt", *options, "-in", str(source), str(pki.agency.certificate_path))
    )


# ------------------------------------------------------------------------- accepted requests


@pytest.mark.parametrize(
    "command, options",
    [
        ("smime", ["-aes256", "-binary"]),
        ("cms", ["-aes256", "-binary"]),
        ("smime", ["-aes128", "-binary"]),
        ("smime", ["-aes256", "-binary", "-stream"]),  # BER, indefinite lengths, chunked content
        ("cms", ["-aes256", "-binary", "-stream"]),
        ("cms", ["-aes256", "-binary", "-keyid"]),  # recipient by subject key identifier
    ],
    ids=["smime", "cms", "smime-aes128", "smime-stream", "cms-stream", "cms-keyid"],
)
def test_openssl_encrypted_file_is_decrypted_byte_identically(openssl, smime_pki, tmp_path, request_file, command, options):
    source = request_file.read_bytes()
    message = _with_headers(
        openssl(command, "-encrypt", *options, "-in", str(request_file), str(smime_pki.agency.certificate_path))
    )
    opened = _open(smime_pki, message)
    assert opened.attachment == source
    assert opened.attachments[0][0] is None  # a bare file carries no name
    assert opened.sender == GENT_ADDRESS
    assert opened.message_id == "<req-1@gent.test>"
    assert opened.signed_by is None
    assert opened.cipher == ("aes-128-cbc" if "-aes128" in options else "aes-256-cbc")


def test_mail_client_style_message_keeps_the_attachment_name(openssl, smime_pki, tmp_path, request_file):
    source = request_file.read_bytes()
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, _mime_request((REQUEST_NAME, source)), "-aes256", "-binary")
    opened = _open(smime_pki, message)
    assert opened.attachments == [(REQUEST_NAME, source)]


@pytest.mark.parametrize("detached", [True, False], ids=["clear-signed", "opaque-signed"])
def test_signed_then_encrypted_request_reports_the_verified_signer(openssl, smime_pki, tmp_path, request_file, detached):
    source = request_file.read_bytes()
    inner = tmp_path / "inner.eml"
    inner.write_bytes(_mime_request((REQUEST_NAME, source)))
    signed = openssl(
        "smime", "-sign", "-in", str(inner), "-signer", str(smime_pki.gent.certificate_path),
        "-inkey", str(smime_pki.gent.key_path), *([] if detached else ["-nodetach"]),
    )
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, signed, "-aes256", "-binary")
    opened = _open(smime_pki, message, require_signature=True)
    assert opened.attachments == [(REQUEST_NAME, source)]
    assert opened.signed_by == smime_pki.gent.certificate


def test_signature_outside_the_envelope_is_verified(openssl, smime_pki, tmp_path, request_file):
    encrypted = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(request_file), str(smime_pki.agency.certificate_path))
    envelope = tmp_path / "envelope.eml"
    envelope.write_bytes(encrypted)
    signed = openssl(
        "smime", "-sign", "-in", str(envelope), "-signer", str(smime_pki.gent.certificate_path),
        "-inkey", str(smime_pki.gent.key_path),
    )
    opened = _open(smime_pki, _with_headers(signed))
    assert opened.attachment == request_file.read_bytes()
    assert opened.signed_by == smime_pki.gent.certificate


# ------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("options", [[], ["-des3"]], ids=["openssl-default", "des3"])
def test_3des_is_refused_before_decrypting_with_a_clear_instruction(openssl, smime_pki, tmp_path, request_file, options):
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, request_file.read_bytes(), *options, "-binary")
    error = _refused(smime_pki, message, "unsupported_cipher")
    assert "3DES (OpenSSL's default)" in str(error)
    assert "-aes256" in str(error)


@pytest.mark.parametrize(
    "options, named",
    [(["-aes-256-gcm"], "AES-GCM"), (["-aes256", "-keyopt", "rsa_padding_mode:oaep"], "RSA-OAEP")],
    ids=["gcm", "oaep"],
)
def test_other_unsupported_algorithms_are_named(openssl, smime_pki, tmp_path, request_file, options, named):
    source = tmp_path / "content.bin"
    source.write_bytes(request_file.read_bytes())
    message = _with_headers(
        # -keyopt applies to the -recip before it
        openssl("cms", "-encrypt", "-binary", "-in", str(source), "-recip", str(smime_pki.agency.certificate_path), *options)
    )
    assert named in str(_refused(smime_pki, message, "unsupported_cipher"))


def test_unknown_sender_is_refused_without_naming_the_mailbox(openssl, smime_pki, tmp_path, request_file):
    body = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(request_file), str(smime_pki.agency.certificate_path))
    error = _refused(smime_pki, _with_headers(body, sender="someone@elsewhere.test"), "unknown_sender")
    assert "@elsewhere.test" in str(error) and "someone" not in str(error)


def test_message_for_another_certificate_is_refused(openssl, smime_pki, tmp_path, request_file):
    body = openssl("smime", "-encrypt", "-aes256", "-binary", "-in", str(request_file), str(smime_pki.antwerpen.certificate_path))
    error = _refused(smime_pki, _with_headers(body), "unknown_certificate")
    assert "not encrypted for the agency" in str(error)


def test_signature_by_an_unregistered_certificate_is_refused(openssl, smime_pki, tmp_path, request_file):
    inner = tmp_path / "inner.eml"
    inner.write_bytes(_mime_request((REQUEST_NAME, request_file.read_bytes())))
    signed = openssl(
        "smime", "-sign", "-in", str(inner), "-signer", str(smime_pki.antwerpen.certificate_path),
        "-inkey", str(smime_pki.antwerpen.key_path),
    )
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, signed, "-aes256", "-binary")
    _refused(smime_pki, message, "unknown_certificate")


def test_signature_by_an_expired_certificate_is_refused(openssl, smime_pki, tmp_path, request_file):
    inner = tmp_path / "inner.eml"
    inner.write_bytes(_mime_request((REQUEST_NAME, request_file.read_bytes())))
    signed = openssl(
        "smime", "-sign", "-in", str(inner), "-signer", str(smime_pki.expired.certificate_path),
        "-inkey", str(smime_pki.expired.key_path),
    )
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, signed, "-aes256", "-binary")
    error = _refused(smime_pki, message, "expired_certificate", sender_certificates=[smime_pki.expired.certificate])
    assert "expired on" in str(error)


def test_unsigned_request_when_every_registered_certificate_expired_is_refused(openssl, smime_pki, tmp_path, request_file):
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, request_file.read_bytes(), "-aes256", "-binary")
    _refused(smime_pki, message, "expired_certificate", sender_certificates=[smime_pki.expired.certificate])


def test_tampered_signature_is_refused(openssl, smime_pki, tmp_path, request_file):
    inner = tmp_path / "inner.eml"
    inner.write_bytes(_mime_request((REQUEST_NAME, request_file.read_bytes())))
    signed = openssl(
        "smime", "-sign", "-in", str(inner), "-signer", str(smime_pki.gent.certificate_path),
        "-inkey", str(smime_pki.gent.key_path),
    )
    tampered = signed.replace(b"Zie bijlage.", b"Zie bijlagE.")
    assert tampered != signed
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, tampered, "-aes256", "-binary")
    _refused(smime_pki, message, "bad_signature")


def test_unsigned_request_is_refused_when_the_protocol_requires_a_signature(openssl, smime_pki, tmp_path, request_file):
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, request_file.read_bytes(), "-aes256", "-binary")
    _refused(smime_pki, message, "bad_signature", require_signature=True)


def test_no_attachment_is_refused(openssl, smime_pki, tmp_path):
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, _mime_request(), "-aes256", "-binary")
    _refused(smime_pki, message, "no_attachment")


def test_two_attachments_are_refused(openssl, smime_pki, tmp_path):
    content = _mime_request((REQUEST_NAME, b"PK\x03\x04one"), ("tweede.xlsx", b"PK\x03\x04two"))
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, content, "-aes256", "-binary")
    assert "2 attachments" in str(_refused(smime_pki, message, "several_attachments"))


def test_oversized_message_is_refused_before_any_work(openssl, smime_pki, tmp_path, request_file):
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, request_file.read_bytes(), "-aes256", "-binary")
    _refused(smime_pki, message, "too_large", max_bytes=len(message) - 1)


def test_unencrypted_message_is_refused(smime_pki):
    plain = _with_headers(_mime_request((REQUEST_NAME, b"PK\x03\x04plain")))
    _refused(smime_pki, plain, "not_smime")


def test_damaged_envelope_is_refused(openssl, smime_pki, tmp_path, request_file):
    message = _encrypt_with_openssl(openssl, smime_pki, tmp_path, request_file.read_bytes(), "-aes256", "-binary")
    head, _, body = message.partition(b"\n\n")
    _refused(smime_pki, head + b"\n\n" + body[:200] + b"\n", "not_smime")


# -------------------------------------------------------------------------- our messages


def test_our_message_decrypts_with_openssl(openssl, smime_pki, tmp_path, request_file):
    source = request_file.read_bytes()
    message = smime.encrypt(
        source,
        smime_pki.gent.certificate,
        filename="resultaat-44021.xlsx",
        subject="Resultaat Groeipakket",
        sender=AGENCY_ADDRESS,
        to=GENT_ADDRESS,
        message_id="<we.test@agency.test>",
    )
    path = tmp_path / "result.eml"
    path.write_bytes(message)
    for command in ("smime", "cms"):
        inner = openssl(
            command, "-decrypt", "-in", str(path), "-recip", str(smime_pki.gent.certificate_path),
            "-inkey", str(smime_pki.gent.key_path),
        )
        parts = [p for p in email.message_from_bytes(inner).walk() if p.get_filename()]
        assert [(p.get_filename(), p.get_payload(decode=True)) for p in parts] == [("resultaat-44021.xlsx", source)]
    asn1 = openssl("cms", "-cmsout", "-print", "-in", str(path))
    assert b"aes-256-cbc" in asn1
    outer = email.message_from_bytes(message)
    assert outer["Message-ID"] == "<we.test@agency.test>"
    assert b"resultaat-44021" not in message  # the file name is inside the envelope


def test_encrypt_then_decrypt_round_trip(smime_pki):
    message = smime.encrypt(
        b"PK\x03\x04result",
        smime_pki.agency.certificate,
        filename="resultaat.xlsx",
        subject="Resultaat",
        sender=GENT_ADDRESS,
        to=AGENCY_ADDRESS,
        message_id="<x@gent.test>",
    )
    opened = _open(smime_pki, message)
    assert opened.attachments == [("resultaat.xlsx", b"PK\x03\x04result")]
    assert opened.message_id == "<x@gent.test>"


def test_encrypting_to_an_expired_certificate_is_refused(smime_pki):
    with pytest.raises(smime.SmimeError) as caught:
        smime.encrypt(
            b"x", smime_pki.expired.certificate, filename="r.xlsx", subject="s", sender=AGENCY_ADDRESS,
            to=GENT_ADDRESS, message_id="<y@agency.test>", today=TODAY,
        )
    assert caught.value.code == "expired_certificate"


# ----------------------------------------------------------------------------- certificates


def test_certificate_expiring_within_30_days_gives_a_warning(smime_pki):
    warning = smime.certificate_expiry_warning(smime_pki.expiring.certificate, TODAY)
    assert warning is not None and "expires on" in warning and "renewed certificate" in warning
    assert "dpo@" not in warning
    assert smime.certificate_expiry_warning(smime_pki.gent.certificate, TODAY) is None
    assert "expired on" in smime.certificate_expiry_warning(smime_pki.expired.certificate, TODAY)
    assert smime.certificate_expiry_warning(smime_pki.gent.certificate, TODAY + dt.timedelta(days=340)) is not None


def test_test_pki_writes_keys_private_and_certificates_with_email_san(smime_pki):
    assert smime_pki.gent.key_path.stat().st_mode & 0o777 == 0o600
    assert smime_pki.ca.directory.joinpath("ca.key").stat().st_mode & 0o777 == 0o600
    assert smime.certificate_emails(smime_pki.gent.certificate) == [GENT_ADDRESS]
    assert smime_pki.expired.certificate.not_valid_after_utc.date() < TODAY


# ------------------------------------------------------------------ envelopes read with asn1crypto
# Every envelope below is written by the OpenSSL command line; ``inspect_envelope`` reads it with
# asn1crypto and must hand ``cryptography`` DER that OpenSSL itself reads the same way.


def _envelope(openssl, pki, request_file, *options: str, recipients: tuple[str, ...] = ("agency",)) -> bytes:
    """A DER/BER ContentInfo (no MIME) from ``openssl cms -encrypt``, to the named certificates."""
    paths = []
    for name in recipients:
        paths += ["-recip", str(getattr(pki, name).certificate_path) if hasattr(pki, name) else name]
    return openssl("cms", "-encrypt", "-binary", "-outform", "DER", *options, "-in", str(request_file), *paths)


def _p7m_message(envelope: bytes, content_type: str = "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m") -> bytes:
    """A request e-mail carrying ``envelope`` as its base64 body, as a mail client sends it."""
    body = base64.encodebytes(envelope)
    return _with_headers(f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode() + body)


def _openssl_reads(openssl, pki, tmp_path, der: bytes) -> bytes:
    """What ``openssl cms -decrypt`` makes of the DER handed to ``cryptography``."""
    path = tmp_path / "normalised.der"
    path.write_bytes(der)
    return openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", str(path), "-recip", str(pki.agency.certificate_path),
        "-inkey", str(pki.agency.key_path),
    )


@pytest.mark.parametrize("option", ["-stream", "-indef"])
def test_indefinite_length_ber_becomes_the_der_openssl_writes(openssl, smime_pki, tmp_path, request_file, option):
    ber = _envelope(openssl, smime_pki, request_file, "-aes256", option)
    assert ber[1] == 0x80  # indefinite length: BER, which cryptography cannot parse
    (tmp_path / "ber.der").write_bytes(ber)
    openssl_der = openssl("cms", "-cmsout", "-inform", "DER", "-outform", "DER", "-in", str(tmp_path / "ber.der"))
    info = smime.inspect_envelope(ber, smime_pki.agency.certificate)
    assert info.der == openssl_der
    assert (info.cipher, info.key_transport_oids) == ("aes-256-cbc", (smime.OID_RSA_ENCRYPTION,))
    assert _openssl_reads(openssl, smime_pki, tmp_path, info.der) == request_file.read_bytes()
    assert _open(smime_pki, _p7m_message(ber)).attachment == request_file.read_bytes()


@pytest.mark.parametrize("options", [["-keyid"], ["-keyid", "-stream"]], ids=["der", "ber"])
def test_key_identifier_recipient_is_named_by_issuer_and_serial_for_cryptography(openssl, smime_pki, tmp_path, request_file, options):
    envelope = _envelope(openssl, smime_pki, request_file, "-aes256", *options)
    (tmp_path / "keyid.der").write_bytes(envelope)
    assert b"subjectKeyIdentifier" in openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "keyid.der"))
    info = smime.inspect_envelope(envelope, smime_pki.agency.certificate)
    (tmp_path / "rewritten.der").write_bytes(info.der)
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "rewritten.der")).decode()
    assert "issuerAndSerialNumber" in printed and "subjectKeyIdentifier" not in printed
    # OpenSSL prints the serial in whole bytes (a leading 0 when the hex has an odd length): compare numbers.
    serials = {int(h, 16) for h in re.findall(r"serialNumber: 0x([0-9A-Fa-f]+)", printed)}
    assert smime_pki.agency.certificate.serial_number in serials, serials
    assert _openssl_reads(openssl, smime_pki, tmp_path, info.der) == request_file.read_bytes()


@pytest.mark.parametrize(
    "recipients, options",
    [
        (("gent", "agency"), []),
        (("agency", "gent"), []),
        (("antwerpen", "gent", "agency"), ["-keyid", "-stream"]),
    ],
    ids=["agency-last", "agency-first", "three-keyid-ber"],
)
def test_message_to_several_recipients_is_opened_with_the_agency_key(openssl, smime_pki, tmp_path, request_file, recipients, options):
    envelope = _envelope(openssl, smime_pki, request_file, "-aes256", *options, recipients=recipients)
    info = smime.inspect_envelope(envelope, smime_pki.agency.certificate)
    assert set(info.key_transport_oids) == {smime.OID_RSA_ENCRYPTION}
    (tmp_path / "ours.der").write_bytes(info.der)
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "ours.der")).decode()
    assert printed.count("d.ktri:") == 1  # cryptography is handed the agency's recipient only
    assert _open(smime_pki, _p7m_message(envelope)).attachment == request_file.read_bytes()


def _ec_certificate(openssl, tmp_path) -> str:
    """A self-signed EC certificate: its recipient in an envelope is a key agreement, not a key transport."""
    key, cert = tmp_path / "ec.key", tmp_path / "ec.pem"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
        "-out", str(cert), "-subj", "/CN=EC recipient (TEST)", "-days", "2",
    )
    return str(cert)


def test_key_agreement_recipient_beside_the_agency_is_passed_over(openssl, smime_pki, tmp_path, request_file):
    envelope = _envelope(openssl, smime_pki, request_file, "-aes256", recipients=(_ec_certificate(openssl, tmp_path), "agency"))
    assert _open(smime_pki, _p7m_message(envelope)).attachment == request_file.read_bytes()


@pytest.mark.parametrize("recipients", [("gent", "antwerpen"), ("ec",)], ids=["two-others", "ec-only"])
def test_message_for_other_recipients_only_is_refused(openssl, smime_pki, tmp_path, request_file, recipients):
    named = tuple(_ec_certificate(openssl, tmp_path) if r == "ec" else r for r in recipients)
    envelope = _envelope(openssl, smime_pki, request_file, "-aes256", recipients=named)
    error = _refused(smime_pki, _p7m_message(envelope), "unknown_certificate")
    assert "not encrypted for the agency" in str(error)


@pytest.mark.parametrize(
    "options, named",
    [([], "3DES (OpenSSL's default)"), (["-aes192"], "aes-192-cbc"), (["-camellia256"], "1.2.392.200011.61.1.1.1.4")],
    ids=["cms-default-3des", "aes192", "camellia"],
)
def test_ciphers_cryptography_cannot_decrypt_are_refused_with_the_aes_instruction(openssl, smime_pki, request_file, options, named):
    error = _refused(smime_pki, _p7m_message(_envelope(openssl, smime_pki, request_file, *options)), "unsupported_cipher")
    assert named in str(error) and "-aes256" in str(error)


def test_envelope_without_smime_type_is_recognised_from_its_asn1(openssl, smime_pki, tmp_path, request_file):
    """Some clients label the .p7m application/octet-stream, or leave out smime-type, inside and out."""
    inner = tmp_path / "inner.eml"
    inner.write_bytes(_mime_request((REQUEST_NAME, request_file.read_bytes())))
    signed = openssl(
        "smime", "-sign", "-nodetach", "-in", str(inner), "-signer", str(smime_pki.gent.certificate_path),
        "-inkey", str(smime_pki.gent.key_path),
    )
    assert b"smime-type=signed-data;" in signed
    signed_file = tmp_path / "signed.eml"
    signed_file.write_bytes(signed.replace(b"smime-type=signed-data;", b""))
    envelope = _envelope(openssl, smime_pki, signed_file, "-aes256")
    opened = _open(smime_pki, _p7m_message(envelope, "application/octet-stream; name=smime.p7m"), require_signature=True)
    assert opened.attachments == [(REQUEST_NAME, request_file.read_bytes())]
    assert opened.signed_by == smime_pki.gent.certificate


def test_padding_after_the_envelope_is_allowed_other_trailing_bytes_are_not(openssl, smime_pki, request_file):
    envelope = _envelope(openssl, smime_pki, request_file, "-aes256")
    assert smime.inspect_envelope(envelope + b"\r\n\x00 ", smime_pki.agency.certificate).cipher == "aes-256-cbc"
    _refused(smime_pki, _p7m_message(envelope + b"\x30\x00"), "not_smime")


ENVELOPED_DATA_WITHOUT_CONTENT = bytes.fromhex("300b06092a864886f70d010703")


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x30\x80" * 5000, b"\x30\x03\x06\x01\x00", b"not asn.1 at all", ENVELOPED_DATA_WITHOUT_CONTENT],
    ids=["empty", "deep", "short", "text", "no-content"],
)
def test_what_is_no_envelope_is_refused_as_not_smime(smime_pki, payload):
    error = _refused(smime_pki, _p7m_message(payload), "not_smime")
    assert "ask the municipality" in str(error)


AES256_IV = bytes.fromhex("060960864801650304012a") + b"\x04\x10"
RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")


def test_damaged_parts_are_refused_as_a_damaged_envelope(openssl, smime_pki, request_file):
    """A recipient or an algorithm parameter that does not parse is damage, not a wrong certificate."""
    envelope = _envelope(openssl, smime_pki, request_file, "-aes256")
    assert envelope.count(RSA_ENCRYPTION) == 1 and envelope.count(AES256_IV) == 1
    unreadable_recipient = envelope.replace(RSA_ENCRYPTION, b"\x04" + RSA_ENCRYPTION[1:])
    assert "malformed" in str(_refused(smime_pki, _p7m_message(unreadable_recipient), "not_smime"))
    iv_of_another_type = envelope.replace(AES256_IV, AES256_IV[:-2] + b"\x02\x10")
    assert "malformed" in str(_refused(smime_pki, _p7m_message(iv_of_another_type), "not_smime"))


@pytest.fixture(scope="module")
def openssl_envelopes(openssl, smime_pki, tmp_path_factory):
    """One DER and one BER (streamed, key identifier) envelope of a small request."""
    source = tmp_path_factory.mktemp("envelopes") / "request.bin"
    source.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 2)
    return [
        _envelope(openssl, smime_pki, source, "-aes256"),
        _envelope(openssl, smime_pki, source, "-aes256", "-stream", "-keyid", recipients=("gent", "agency")),
    ]


@hypothesis.settings(max_examples=150, deadline=None, database=None, derandomize=True)
@hypothesis.given(
    which=st.integers(0, 1),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3),
)
def test_a_damaged_envelope_gets_a_clear_refusal_never_a_traceback(smime_pki, openssl_envelopes, which, cut, flips):
    """Truncated or garbled: a refusal with a code and an instruction, or (damage in the ciphertext) a result."""
    damaged = bytearray(openssl_envelopes[which])
    for where, xor in flips:
        damaged[int(where * (len(damaged) - 1))] ^= xor
    damaged = damaged[: max(1, int(cut * len(damaged)))] if cut < 0.5 else damaged
    try:
        _open(smime_pki, _p7m_message(bytes(damaged)))
    except smime.SmimeError as error:
        text = str(error)
        assert error.code in {"not_smime", "unknown_certificate", "unsupported_cipher", "decrypt_failed", "no_attachment"}
        assert "ask the municipality" in text
        assert not any(word in text for word in ("Traceback", "asn1crypto", "parsing", "Error"))
