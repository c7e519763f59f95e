"""Migration 0006: retention items recorded before it keep their rows and get the digest their
exchange already knows, so the retention run can identify the copy; a round trip keeps the data."""

from __future__ import annotations

import datetime as dt
import hashlib

import sqlalchemy as sa
from alembic import command

from tests.retention.helpers import ACTOR, exchange, signed_protocol
from welfare_exchange import audit
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.engine import alembic_config, dispose_engines, upgrade
from welfare_exchange.db.models import Exchange, RetentionItem

DAY = dt.date(2027, 1, 5)
REPORT_SHA = hashlib.sha256(b"report").hexdigest()
MESSAGE_SHA = hashlib.sha256(b"raw message").hexdigest()


def _item_as_0004(conn, **row) -> None:
    """What ledger.schedule_deletion wrote before 0006."""
    values = {"exchange_id": None, "sha256": None, "rule": "test rule", "deadline": DAY, **row}
    conn.execute(sa.text(
        'INSERT INTO retention_item (protocol_id, exchange_id, kind, "where", location, sha256, rule, deadline) '
        "VALUES (:protocol_id, :exchange_id, :kind, :where, :location, :sha256, :rule, :deadline)"
    ), values)


def test_old_items_get_their_copy_digest_and_survive_a_round_trip(project_db):
    # The protocol, exchange and audit fact through today's models; then back to 0004 for the rest.
    pid = signed_protocol()
    eid = exchange(pid)
    with session_scope() as session:
        request_sha = session.get(Exchange, eid).request_sha256
        audit.record(session, "request.fetched", actor=ACTOR, exchange_id=eid,
                     file_hashes={"request": request_sha, "message": MESSAGE_SHA})
    dispose_engines()
    command.downgrade(alembic_config(project_db), "0004")
    dispose_engines()
    with get_engine(project_db).begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO side_effect (idempotency_key, kind, exchange_id, state, sha256, created_at) "
            "VALUES (:key, 'report_delivered', :e, 'done', :sha, :at)"
        ), {"key": f"exchange:{eid}:report", "e": eid, "sha": REPORT_SHA, "at": dt.datetime(2026, 11, 2)})
        _item_as_0004(conn, protocol_id=pid, exchange_id=eid, kind="quarantine", where="sftp", location="sftp_99901:quarantine/a.xlsx")
        _item_as_0004(conn, protocol_id=pid, exchange_id=eid, kind="report", where="sftp", location="sftp_99901:outbox/a.txt")
        # The message item held the attachment's digest, which no message in a mailbox matches.
        _item_as_0004(conn, protocol_id=pid, exchange_id=eid, kind="request_message", where="imap",
                      location="imap_agency:Processed:uid-1", sha256=request_sha)
        _item_as_0004(conn, protocol_id=pid, kind="staging", where="local", location="/staging/protocol-1/exchange-1")
    dispose_engines()

    upgrade(project_db)
    dispose_engines()

    with session_scope() as session:
        items = {i.kind: i for i in session.scalars(sa.select(RetentionItem))}
        assert items["quarantine"].sha256 == request_sha
        assert items["report"].sha256 == REPORT_SHA
        assert items["request_message"].sha256 == MESSAGE_SHA
        assert items["staging"].sha256 is None
        assert all(i.size is None and i.uid is None and i.missing_since is None for i in items.values())
        items["request_message"].uidvalidity, items["request_message"].uid, items["report"].size = 17, 4, 6

    command.downgrade(alembic_config(project_db), "0004")
    dispose_engines()
    with get_engine(project_db).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM retention_item")).scalar() == 4
    dispose_engines()
    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        assert len(session.scalars(sa.select(RetentionItem)).all()) == 4
