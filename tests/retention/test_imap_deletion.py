"""Request messages of the S/MIME channel are deleted from the agency's mailbox (real dovecot)."""

from __future__ import annotations

import datetime as dt

from tests.retention.helpers import ACTOR, item, records, schedule, signed_protocol
from welfare_exchange.retention import runner
from welfare_exchange.transport.mail import DEFAULT_IMAP_CONN_ID

DAY = dt.date(2027, 1, 5)


def _message(message_id: str) -> bytes:
    return (
        f"From: dpo@gent.test\r\nTo: groeipakket@agency.test\r\nSubject: aanvraag\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nencrypted body\r\n"
    ).encode()


def test_imap_request_messages_are_deleted_or_certified_already_gone(sqlite_db, mail_env):
    mail_env.inject("agency", _message("keep@gent.test"), mailbox="Processed")
    mail_env.inject("agency", _message("due@gent.test"), mailbox="Processed")
    pid = signed_protocol()
    due = schedule(pid, None, "request_message", "imap", f"{DEFAULT_IMAP_CONN_ID}:Processed:<due@gent.test>", DAY)
    gone = schedule(pid, None, "rejected_message", "imap", f"{DEFAULT_IMAP_CONN_ID}:Rejected:<never@gent.test>", DAY)
    later = schedule(pid, None, "request_message", "imap", f"{DEFAULT_IMAP_CONN_ID}:Processed:<keep@gent.test>", DAY.replace(day=6))

    report = runner.delete_due(DAY, actor=ACTOR)

    assert {c.item_id: c.outcome for c in report.certificates} == {due: "deleted", gone: "already_gone"}
    left = mail_env.messages("agency", "Processed")
    assert len(left) == 1 and b"keep@gent.test" in left[0]
    assert item(later).deleted_at is None
    assert runner.delete_due(DAY, actor=ACTOR).certificates == []
    assert len(records("retention.deleted")) == 2
