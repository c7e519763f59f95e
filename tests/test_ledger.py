"""The exchange ledger: one exchange per request file, side effects done once."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol, RetentionItem
from welfare_exchange.protocols import create


@pytest.fixture
def protocol_id(project_db):
    with session_scope() as session:
        return create(session, nis_code="11002", municipality="Antwerpen", kind="method1", channel="sftp",
                      key_connection="k", actor=audit.Actor()).id


def test_same_request_hash_is_the_same_exchange(protocol_id):
    with session_scope() as session:
        protocol = session.get(Protocol, protocol_id)
        first, new = ledger.open_exchange(session, protocol, request_sha256="a" * 64, request_name="r.xlsx",
                                          request_size=10, dag_id="d", run_id="r1", exchange_date=dt.date(2026, 11, 28))
        again, new_again = ledger.open_exchange(session, protocol, request_sha256="a" * 64, request_name="copy.xlsx",
                                                request_size=10, dag_id="d", run_id="r2", exchange_date=dt.date(2026, 11, 29))
        assert new and not new_again and first.id == again.id and again.run_id == "r1"


def test_side_effect_is_begun_then_done_once(protocol_id):
    key = "exchange:1:deliver:result"
    with session_scope() as session:
        assert not ledger.is_done(session, key)
        ledger.begin_side_effect(session, key, kind="delivered", exchange_id=None, target="outbox/x.xlsx")
        ledger.begin_side_effect(session, key, kind="delivered", exchange_id=None, target="outbox/x.xlsx")
        assert not ledger.is_done(session, key)
        ledger.complete_side_effect(session, key, sha256="b" * 64)
        first_done = ledger.find_side_effect(session, key).done_at
        ledger.complete_side_effect(session, key, sha256="c" * 64)
        effect = ledger.find_side_effect(session, key)
        assert ledger.is_done(session, key) and effect.sha256 == "b" * 64 and effect.done_at == first_done


def test_schedule_deletion_is_idempotent(protocol_id):
    with session_scope() as session:
        for _ in range(2):
            ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=None, kind="result_file", where="sftp",
                                     location="outbox/r.xlsx", deadline=dt.date(2027, 2, 26), rule="result: 90 days")
        assert session.scalar(sa.select(sa.func.count()).select_from(RetentionItem)) == 1
