"""S/MIME: requests made by a real client (the OpenSSL command line) and our own messages.

Every refusal is checked for its code and for a message that says what to do and leaks
neither the sender's mailbox name, nor the file name, nor content.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
from email.message import EmailMessage

import pytest

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
