"""Nothing plaintext at rest: every refusal path, on both channels, leaves staging sealed.

A refused request was kept in staging exactly as it arrived — for an unencrypted file, the list
of children in the clear. Each way a request can be refused (every intake refusal on SFTP and on
e-mail, and every S/MIME refusal) is walked here through the real steps against the real SFTP
and mail servers; after each, the whole staging tree is scanned for ZIP/OLE headers and INSZ
numbers, and every file in it must unseal with the staging key.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import io
from email.message import EmailMessage

import msoffcrypto
import pytest
import sqlalchemy as sa
import xlsxwriter

from tests.exchange.builders import request_workbook
from tests.exchange.conftest import mail_logical_date
from tests.fixtures.mail import AGENCY_ADDRESS, ANTWERPEN_ADDRESS, GENT_ADDRESS
from tests.fixtures.pii_scan import assert_staging_sealed
from tests.intake.conftest import _load_corpus
from welfare_exchange import insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange
from welfare_exchange.exchange import steps
from welfare_exchange.channels import smime as mail_channel
from welfare_exchange.channels.common import ExchangeRefused
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.intake import encrypt_agile
from welfare_exchange.protocols import get
from welfare_exchange.settings import get_settings
from welfare_exchange.transport import sftp

pytestmark = [pytest.mark.sftp, pytest.mark.libreoffice]


def _numbers(n: int = 150) -> list[str]:
    return [insz.make(dt.date(2010, 1, 1) + dt.timedelta(days=3 * i), 100 + i % 800) for i in range(n)]


def _book(sheets: dict[str, list[list[str]]]) -> bytes:
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            sheet.write_row(r, 0, row)
    book.close()
    return buffer.getvalue()


@pytest.fixture(scope="module")
def plain_xls() -> bytes:
    """An unencrypted .xls as LibreOffice writes it (its RC4 file, decrypted)."""
    import tempfile
    from pathlib import Path

    corpus = _load_corpus()
    password = corpus.new_password()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "request.xls"
        rows = [["INSZ", "Naam"]] + [[n, "Kind"] for n in _numbers(20)]
        corpus.libreoffice_encrypt([{"rows": rows, "out": str(out), "format": "xls", "password": password}])
        office = msoffcrypto.OfficeFile(io.BytesIO(out.read_bytes()))
    office.load_key(password=password)
    plain = io.BytesIO()
    office.decrypt(plain)
    return plain.getvalue()


def _unsupported(data: bytes) -> bytes:
    """An Agile file whose EncryptionInfo claims Extensible encryption (version 4.3)."""
    mark = b"\x04\x00\x04\x00\x40\x00\x00\x00<?xml"
    assert data.count(mark) == 1
    return data.replace(mark, b"\x04\x00\x03\x00" + mark[4:])


def intake_refusals(password: str, plain_xls: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    """(expected code, file as sent, intake limits in force) for every intake refusal."""
    numbers = _numbers()
    good = encrypt_agile(request_workbook(numbers[:20]), password)
    return [
        ("not_encrypted", request_workbook(numbers[:20]), {}),
        ("not_encrypted", plain_xls, {}),
        ("wrong_password", encrypt_agile(request_workbook(numbers[:20]), password + "x"), {}),
        ("corrupt", good[: len(good) // 2], {}),
        ("not_excel", b"%PDF-1.7\n" + " ".join(numbers[:20]).encode(), {}),
        ("unsupported_encryption", _unsupported(encrypt_agile(request_workbook(numbers[20:40]), password)), {}),
        ("too_large", encrypt_agile(request_workbook(numbers[40:60]), password), {"MAX_FILE_BYTES": "1000"}),
        ("too_many_rows", encrypt_agile(request_workbook(numbers), password), {"MAX_ROWS": "10"}),
        ("zip_bomb", encrypt_agile(request_workbook(numbers[60:80]), password), {"MAX_DECOMPRESSED_BYTES": "2000"}),
        ("timeout", encrypt_agile(request_workbook(numbers[80:100]), password), {"MAX_SECONDS": "-1"}),
        ("no_insz_column", encrypt_agile(_book({"Blad1": [["Naam"], ["Kind"], ["Kind"]]}), password), {}),
        ("ambiguous_sheet", encrypt_agile(_book({"A": [["INSZ"], [numbers[0]]], "B": [["INSZ"], [numbers[1]]]}), password), {}),
        ("ambiguous_sheet", encrypt_agile(_book({"A": [["INSZ", "INSZ"], [numbers[2], numbers[3]]]}), password), {}),
        ("empty", encrypt_agile(_book({"Blad1": [["INSZ", "Naam"]]}), password), {}),
    ]


def _info(day: dt.date, run_id: str) -> RunInfo:
    return RunInfo(exchange_date=day, dag_id="method1_test", run_id=run_id, task_id="step", try_number=1)


def _refuse(exchange_id: int, info: RunInfo, limits: dict[str, str], monkeypatch) -> str:
    with monkeypatch.context() as patch:
        for name, value in limits.items():
            patch.setenv(f"WELFARE_EXCHANGE_INTAKE_{name}", value)
        with pytest.raises(ExchangeRefused):
            steps.decrypt_and_validate(exchange_id, info)
    with session_scope() as session:
        exchange = session.get(Exchange, exchange_id)
        assert exchange.state == "quarantined"
        return exchange.failure_code


def _staging_is_sealed(exchanges: int) -> None:
    root = get_settings().staging_dir
    assert assert_staging_sealed(root) == exchanges, "one sealed request per refused exchange, nothing else"
    assert not list(root.glob("protocol-*/incoming/*"))


def test_every_refusal_over_sftp_leaves_only_sealed_bytes(method1, plain_xls, monkeypatch):
    m = method1
    for n, (code, data, limits) in enumerate(intake_refusals(m.password, plain_xls)):
        name = f"aanvraag-{n}.xls" if data is plain_xls else f"aanvraag-{n}.xlsx"
        m.municipality.upload_request(data, name)
        info = _info(dt.date(2026, 11, 2), f"sftp-{n}")
        exchange_id = steps.fetch_request(m.protocol_id, {"name_sha256": sftp.name_handle(name)}, info)

        assert _refuse(exchange_id, info, limits, monkeypatch) == code, name
        _staging_is_sealed(n + 1)
    assert len(m.remote("quarantine")) == n + 1


def _mail_with(openssl, m, tmp_path, attachment: bytes, *options: str, sender: str = GENT_ADDRESS) -> bytes:
    source = tmp_path / "aanvraag.bin"
    source.write_bytes(attachment)
    return openssl("smime", "-encrypt", *options, "-from", sender, "-to", AGENCY_ADDRESS, "-subject", "Aanvraag",
                   "-in", str(source), str(m.pki.agency.certificate_path))


def _mime(*attachments: bytes, text: str = "Zie bijlage") -> bytes:
    entity = EmailMessage(policy=email.policy.SMTP)
    entity.set_content(text)
    for n, data in enumerate(attachments):
        entity.add_attachment(data, maintype="application", subtype="octet-stream", filename=f"aanvraag-{n}.xlsx")
    return entity.as_bytes()


def test_every_refusal_by_mail_leaves_only_sealed_bytes(method1_mail, plain_xls, openssl, tmp_path, monkeypatch):
    m = method1_mail
    day = mail_logical_date().date()
    refused = 0
    for n, (code, data, limits) in enumerate(intake_refusals(m.password, plain_xls)):
        m.servers.inject("agency", _mail_with(openssl, m, tmp_path, data, "-aes256", "-binary"))
        info = _info(day, f"mail-{n}")
        exchange_id = steps.fetch_request(m.protocol_id, mail_channel.first_waiting(GENT_ADDRESS), info)

        assert _refuse(exchange_id, info, limits, monkeypatch) == code
        refused += 1
        _staging_is_sealed(refused)

    # The S/MIME refusals: nothing is staged at all, not even sealed.
    plain_list = request_workbook(_numbers()[:20])
    unencrypted_mail = EmailMessage(policy=email.policy.SMTP)
    unencrypted_mail["From"], unencrypted_mail["To"], unencrypted_mail["Subject"] = GENT_ADDRESS, AGENCY_ADDRESS, "Aanvraag"
    unencrypted_mail.set_content("De lijst zit in bijlage.")
    unencrypted_mail.add_attachment(plain_list, maintype="application", subtype="octet-stream", filename="aanvraag.xlsx")
    smime_refusals = [
        ("not_smime", unencrypted_mail.as_bytes(), {}),
        ("unsupported_cipher", _mail_with(openssl, m, tmp_path, plain_list, "-binary"), {}),  # 3DES
        ("no_attachment", _mail_with(openssl, m, tmp_path, _mime(), "-aes256"), {}),
        ("several_attachments", _mail_with(openssl, m, tmp_path, _mime(plain_list, plain_list[:-1]), "-aes256"), {}),
        ("too_large", _mail_with(openssl, m, tmp_path, plain_list, "-aes256", "-binary"), {"WELFARE_EXCHANGE_MAIL_MAX_BYTES": "4096"}),
        ("bad_signature", _mail_with(openssl, m, tmp_path, plain_list, "-aes256", "-binary"), {}),  # signature required
    ]
    for n, (code, message, env) in enumerate(smime_refusals):
        m.servers.inject("agency", message)
        with session_scope() as session:
            get(session, m.protocol_id).require_signature = code == "bad_signature"
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            with pytest.raises(ExchangeRefused, match=code):
                steps.fetch_request(m.protocol_id, mail_channel.first_waiting(GENT_ADDRESS), _info(day, f"smime-{n}"))
        _staging_is_sealed(refused)

    m.servers.inject("agency", _mail_with(openssl, m, tmp_path, plain_list, "-aes256", "-binary", sender=ANTWERPEN_ADDRESS))
    assert mail_channel.reject_unknown_senders(_info(day, "triage"))["rejected"] == 1
    _staging_is_sealed(refused)
    with session_scope() as session:
        rejected = session.scalars(sa.select(AuditRecord.message).where(AuditRecord.action == "request.rejected")).all()
    assert len(rejected) == len(smime_refusals) + 1
    assert m.mailbox("agency") == [] and len(m.mailbox("agency", "Rejected")) == refused + len(rejected)
