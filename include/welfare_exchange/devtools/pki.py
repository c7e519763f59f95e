"""A throw-away certificate authority for tests and the demo: never for production.

The encrypted e-mail channel (S/MIME) needs an X.509 certificate and RSA key for the agency
and a certificate per municipality (its DPO's mailbox). In production those come from a
public CA and are exchanged between the two DPOs when the protocol is signed; here we make
them on the fly with ``cryptography`` so that nothing secret is ever committed.

Certificates can be made valid, already expired, or expiring within a few days, to exercise
the channel's certificate checks. Private keys are written with mode 600 and never encrypted
(they are throw-away); certificates with mode 644.

Example::

    ca = TestCertificateAuthority.create(tmp_path / "pki")
    agency = ca.issue("Opgroeien test", "groeipakket@agency.test")
    gent = ca.issue("Gent DPO", "dpo@gent.test", valid_days=10)   # expires soon
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: RSA because ``PKCS7EnvelopeBuilder`` only encrypts to RSA recipients (PKCS#1 v1.5 key
#: transport); 2048 bits keeps key generation fast enough for per-test certificates.
KEY_SIZE = 2048


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` set before any byte lands on disk.

    A key file must never exist, even briefly, with a wider mode than 600: we create the
    temporary file with the final mode and rename it into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed or O_CREAT kept an older mode
    os.replace(tmp, path)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "cert"


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate with its key, in memory and on disk.

    :param certificate: the X.509 certificate.
    :param private_key: its RSA private key.
    :param certificate_path: PEM file of the certificate (mode 644).
    :param key_path: PEM file of the unencrypted private key (mode 600).
    :param email: the e-mail address in the certificate's subjectAltName (rfc822Name).
    """

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    certificate_path: Path
    key_path: Path
    email: str

    @property
    def certificate_pem(self) -> str:
        """The certificate as PEM text, e.g. for an Airflow connection's extra."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def key_pem(self) -> str:
        """The private key as unencrypted PKCS#8 PEM text (test keys only)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")


@dataclass(frozen=True)
class TestCertificateAuthority:
    """A self-signed CA that issues S/MIME certificates into ``directory``.

    :param directory: where the CA and every issued certificate and key are written.
    :param certificate: the CA's self-signed certificate.
    :param private_key: the CA's key (mode 600 on disk).
    """

    __test__ = False  # a class named Test* is not a pytest test class

    directory: Path
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    @property
    def certificate_path(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], *, common_name: str = "Welfare Exchange TEST CA"
    ) -> TestCertificateAuthority:
        """Generate a new CA key and self-signed certificate (valid ten years) in ``directory``.

        :param directory: created if missing; the CA is written as ``ca.pem`` / ``ca.key``.
        :param common_name: the CA's subject CN; it says TEST so nobody trusts it by mistake.
        """
        directory = Path(directory)
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "welfare-exchange test"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        now = _now()
        # Back-dated so that certificates issued "already expired" still fall inside it.
        not_before = now - dt.timedelta(days=3650)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(directory / "ca.pem", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(
            directory / "ca.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        return cls(directory=directory, certificate=certificate, private_key=key)

    def issue(
        self,
        common_name: str,
        email: str,
        *,
        valid_days: float = 365,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        file_stem: str | None = None,
        time_stamping: bool = False,
    ) -> IssuedCertificate:
        """Issue an S/MIME certificate for ``email`` and write it and its key.

        Validity is ``[now - 1 day, now + valid_days]`` unless ``not_before`` / ``not_after``
        are given. Use :func:`expired_window` or a small ``valid_days`` for certificates that
        are already expired or expire soon.

        :param common_name: subject CN (e.g. ``"DPO Gent"``).
        :param email: the mailbox the certificate is for, put in subjectAltName (rfc822Name).
        :param valid_days: days from now until the certificate expires.
        :param not_before: explicit start of validity (timezone-aware UTC).
        :param not_after: explicit end of validity (timezone-aware UTC).
        :param file_stem: file names ``<stem>.pem`` / ``<stem>.key``; derived from ``email``
            by default.
        :param time_stamping: a time-stamping authority's certificate instead (RFC 3161: extended
            key usage ``timeStamping`` only, critical) — the loopback TSA of ``devtools/tsa.py``.
        """
        now = _now()
        not_before = not_before or now - dt.timedelta(days=1)
        not_after = not_after or now + dt.timedelta(days=valid_days)
        if not_after <= not_before:
            raise ValueError("not_after must be later than not_before")
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
            ]
        )
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
                    key_encipherment=not time_stamping,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING if time_stamping else ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                critical=time_stamping,
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(self.private_key, hashes.SHA256())
        )
        stem = file_stem or _slug(email)
        certificate_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        _write(certificate_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        return IssuedCertificate(
            certificate=certificate,
            private_key=key,
            certificate_path=certificate_path,
            key_path=key_path,
            email=email,
        )


def expired_window(days_ago: int = 10, lifetime_days: int = 365) -> tuple[dt.datetime, dt.datetime]:
    """``(not_before, not_after)`` of a certificate that expired ``days_ago`` days ago.

    :param days_ago: how long ago it expired.
    :param lifetime_days: how long it had been valid.
    """
    not_after = _now() - dt.timedelta(days=days_ago)
    return not_after - dt.timedelta(days=lifetime_days), not_after


@dataclass(frozen=True)
class DemoPki:
    """The certificates of one demo or test world.

    :param ca: the throw-away CA.
    :param agency: the agency's certificate and key (it decrypts requests, signs nothing yet).
    :param municipalities: per municipality e-mail address, its certificate and key.
    """

    ca: TestCertificateAuthority
    agency: IssuedCertificate
    municipalities: dict[str, IssuedCertificate]


def make_demo_pki(
    directory: str | os.PathLike[str],
    *,
    agency_email: str = "groeipakket@agency.test",
    municipality_emails: dict[str, str] | None = None,
) -> DemoPki:
    """Create a CA, the agency's certificate and one certificate per municipality.

    :param directory: where everything is written (keys mode 600); never inside the repo's
        tracked files — use a temporary or ``var/`` folder.
    :param agency_email: the agency's mailbox.
    :param municipality_emails: NIS code → DPO mailbox; two demo municipalities by default.
    """
    ca = TestCertificateAuthority.create(directory)
    agency = ca.issue("Groeipakket agency (TEST)", agency_email, file_stem="agency")
    emails = municipality_emails or {"44021": "dpo@gent.test", "11002": "dpo@antwerpen.test"}
    municipalities = {
        address: ca.issue(f"DPO {nis} (TEST)", address, file_stem=f"municipality-{nis}")
        for nis, address in emails.items()
    }
    return DemoPki(ca=ca, agency=agency, municipalities=municipalities)
