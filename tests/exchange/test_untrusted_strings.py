"""Strings a municipality supplies reach no output but as a handle: an end-to-end scan.

An INSZ and a person's name are put into everything a municipality names — the SFTP file name,
the sheet name, the column header, and for e-mail the subject, the sender's display name and the
attachment's file name — and a real Method 1 exchange runs on each channel (``dag.test()``), once
delivered and once refused. Then every output is scanned: the task logs, every XCom value, every
audit record (the deletion certificates included, after a retention run), the Exchanges view's
JSON, ``retention status``, and what went back to the municipality (result workbook, validation
report).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import io
import json
import pathlib
import time
from email.message import EmailMessage

import sqlalchemy as sa
import xlsxwriter

from tests.dagutil import task_states
from tests.exchange.conftest import EXCHANGE_DATE, LOGICAL_DATE, mail_logical_date
from tests.fixtures.mail import AGENCY_ADDRESS, GENT_ADDRESS
from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.intake import encrypt_agile
from welfare_exchange.retention import runner
from welfare_exchange.retention.status import retention_status
from welfare_exchange.settings import get_settings
from welfare_exchange.ui import queries

PERSON = "Janssens Marie"
#: A checksum-valid number made at test time (never committed).
NUMBER = insz.make(dt.date(2015, 5, 17), 417)


def _request(numbers: list[str], password: str) -> bytes:
    """The sheet named with the number; the column headed with the person's name."""
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = book.add_worksheet(NUMBER)
    sheet.write_row(0, 0, [f"INSZ {PERSON}", "Naam"])
    for r, number in enumerate(numbers, start=1):
        sheet.write_row(r, 0, [number, f"Kind {r}"])
    book.close()
    return encrypt_agile(buffer.getvalue(), password)


def _leaks(where: str, text: str) -> list[str]:
    found = [word for word in PERSON.split() if word in text] + (["the number"] if NUMBER in text else [])
    if insz.find_insz_shaped(text) and not where.startswith(RESULT):  # a result holds the matched numbers
        found.append("INSZ-shaped")
    return [f"{where}: {', '.join(sorted(set(found)))}"] if found else []


def _xcoms(run) -> dict[str, str]:
    return {ti.task_id: json.dumps(ti.xcom_pull(task_ids=ti.task_id), default=str) for ti in run.get_task_instances()}


def _database_outputs(today: dt.date) -> dict[str, str]:
    """Audit records (all columns), the Exchanges view's JSON and retention status."""
    with session_scope() as session:
        records = [
            json.dumps({c.name: getattr(r, c.name) for c in AuditRecord.__table__.columns}, default=str)
            for r in session.scalars(sa.select(AuditRecord).order_by(AuditRecord.id))
        ]
        view = json.dumps(queries.overview(session, today, audit_max_age=0).to_dict(), default=str)
        status = json.dumps(retention_status(session, today), default=str)
    return {"audit records": "\n".join(records), "Exchanges view JSON": view, "retention status": status}


def _task_log_files(since: float) -> str:
    logs = pathlib.Path(get_settings().home) / "airflow" / "logs"
    files = [p for p in logs.rglob("*") if p.is_file() and p.stat().st_mtime >= since] if logs.exists() else []
    return "\n".join(p.read_text(errors="replace") for p in files)


def _retention_outputs(day: dt.date) -> dict[str, str]:
    report = runner.delete_due(day, actor=audit.Actor.current_user())
    assert report.certificates, "the retention run certified deletions"
    return {"retention certificates": json.dumps([dataclasses.asdict(c) for c in report.certificates], default=str),
            "retention summary": json.dumps(report.summary())}


def _assert_no_leaks(outputs: dict[str, str]) -> None:
    leaks = [leak for where, text in outputs.items() for leak in _leaks(where, text)]
    assert not leaks, f"a municipality's string reached an output: {leaks}"


#: Outputs that are results: personal data by design, but never the strings the municipality named things with.
RESULT = "result workbook"


def _cells(m, data: bytes) -> str:
    return json.dumps(m.open_result(data), default=str)


def test_sftp_names_sheets_and_headers_appear_only_as_handles(method1, capsys, caplog):
    m = method1
    started = time.time()
    numbers = [n for n, _ in m.world.children[:30]]
    name = f"aanvraag {PERSON} {NUMBER}.xlsx"
    m.municipality.upload_request(_request(numbers, m.password), name)
    delivered = m.run()
    assert delivered.state == "success", task_states(delivered)
    m.municipality.upload_request(_request(numbers[:10], m.password + "x"), name)  # refused: wrong password
    refused = m.run(LOGICAL_DATE + dt.timedelta(days=1))
    assert task_states(refused)["decrypt_and_validate"] == "failed"

    outputs = {f"XCom {n} {task}": value for n, run in enumerate((delivered, refused)) for task, value in _xcoms(run).items()}
    outbox = m.outbox()
    assert len(outbox) == 3 and all(n.startswith("groeipakket_") for n in outbox), "the agency names what it sends"
    outputs["outbox file names"] = " ".join(outbox)
    for file_name, data in outbox.items():
        result = file_name.endswith(".xlsx")
        outputs[f"{RESULT if result else 'outbox'} {file_name}"] = _cells(m, data) if result else data.decode()
    outputs.update(_database_outputs(EXCHANGE_DATE))
    outputs.update(_retention_outputs(EXCHANGE_DATE + dt.timedelta(days=400)))
    outputs.update(_database_outputs(EXCHANGE_DATE + dt.timedelta(days=400)))
    captured = capsys.readouterr()
    outputs["task logs"] = captured.out + captured.err + caplog.text + _task_log_files(started)

    assert "sheet 1 (#" in outputs["XCom 0 decrypt_and_validate"] and "column A (#" in outputs["XCom 0 decrypt_and_validate"]
    _assert_no_leaks(outputs)


def _municipality_mail(openssl, m, tmp_path, attachment: bytes) -> bytes:
    """A mail client's S/MIME message: the person in the subject, the display name and the file name."""
    inner = EmailMessage(policy=email.policy.SMTP)
    inner.set_content("De aanvraag zit in bijlage.")
    inner.add_attachment(attachment, maintype="application", subtype="octet-stream",
                         filename=f"{PERSON} {NUMBER}.xlsx")
    source = tmp_path / "inner.eml"
    source.write_bytes(inner.as_bytes())
    return openssl("smime", "-encrypt", "-aes256", "-from", f'"{PERSON} {NUMBER}" <{GENT_ADDRESS}>', "-to", AGENCY_ADDRESS,
                   "-subject", f"Aanvraag {PERSON} {NUMBER}", "-in", str(source), str(m.pki.agency.certificate_path))


def _open(openssl, m, tmp_path, message: bytes) -> dict[str, bytes]:
    path = tmp_path / "reply.eml"
    path.write_bytes(message)
    inner = openssl("smime", "-decrypt", "-in", str(path), "-recip", str(m.pki.gent.certificate_path),
                    "-inkey", str(m.pki.gent.key_path))
    entity = email.message_from_bytes(inner, policy=email.policy.default)
    return {part.get_filename(): part.get_payload(decode=True) for part in entity.walk() if part.get_filename()}


def test_mail_subject_sender_name_and_attachment_name_appear_only_as_handles(method1_mail, openssl, tmp_path, capsys, caplog):
    m = method1_mail
    started = time.time()
    numbers = [n for n, _ in m.world.children[:30]]
    sent = _municipality_mail(openssl, m, tmp_path, _request(numbers, m.password))
    assert PERSON.encode() in sent and b"message-id" not in sent.lower()
    m.servers.inject("agency", sent)
    delivered = m.run(mail_logical_date())
    assert delivered.state == "success", task_states(delivered)
    m.servers.inject("agency", _municipality_mail(openssl, m, tmp_path, _request(numbers[:10], m.password + "x")))
    refused = m.run(mail_logical_date() + dt.timedelta(hours=1))
    assert task_states(refused)["decrypt_and_validate"] == "failed"

    outputs = {f"XCom {n} {task}": value for n, run in enumerate((delivered, refused)) for task, value in _xcoms(run).items()}
    replies = m.mailbox("gent")
    assert len(replies) == 3  # the receipt, the result, the refusal
    for n, reply in enumerate(replies):
        headers = email.message_from_bytes(reply, policy=email.policy.default)
        outputs[f"reply {n} headers"] = f"{headers['Subject']} {headers['To']} {headers['From']}"
        for file_name, data in _open(openssl, m, tmp_path, reply).items():
            result = file_name.endswith(".xlsx")
            outputs[f"{RESULT if result else 'reply'} {n} {file_name}"] = file_name + (_cells(m, data) if result else data.decode())
    day = mail_logical_date().date()
    outputs.update(_database_outputs(day))
    outputs.update(_retention_outputs(day + dt.timedelta(days=400)))
    outputs.update(_database_outputs(day + dt.timedelta(days=400)))
    captured = capsys.readouterr()
    outputs["task logs"] = captured.out + captured.err + caplog.text + _task_log_files(started)

    assert m.mailbox("agency", "Processed") == [] and m.mailbox("agency", "Rejected") == [], "both deleted, verified"
    _assert_no_leaks(outputs)
