"""Small builders for retention tests: a protocol, an exchange, retention items — no Airflow."""

from __future__ import annotations

import datetime as dt
import hashlib

import sqlalchemy as sa

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Protocol, RetentionItem
from welfare_exchange.protocols import create, transition
from welfare_exchange.staging import Staging

ACTOR = audit.Actor(type="user", name="retention-test")
EXCHANGE_DATE = dt.date(2026, 11, 2)


def signed_protocol(nis: str = "99901", **overrides) -> int:
    """A signed Method 1 protocol (SFTP); ``overrides`` go to ``protocols.create``."""
    with session_scope() as session:
        protocol = create(
            session, nis_code=nis, municipality=f"Testgemeente {nis}", kind="method1", channel="sftp",
            key_connection=f"key_{nis}", college_decision_ref="CB/2026/1", college_decision_date=dt.date(2026, 9, 1),
            dpo_advice_date=dt.date(2026, 9, 15), actor=ACTOR, **overrides,
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=ACTOR, on=dt.date(2026, 10, 1))
        return protocol.id


def exchange(protocol_id: int, *, state: str = "delivered", on: dt.date = EXCHANGE_DATE, tag: str = "a") -> int:
    with session_scope() as session:
        protocol = session.get(Protocol, protocol_id)
        row, _ = ledger.open_exchange(
            session, protocol, request_sha256=hashlib.sha256(f"{protocol_id}{tag}".encode()).hexdigest(),
            request_name=f"aanvraag-{tag}.xlsx", request_size=10, dag_id="test", run_id=f"run-{tag}", exchange_date=on,
        )
        ledger.update_exchange(session, row, state=state)
        return row.id


def staging_with_files(protocol_id: int, exchange_id: int, *names: str) -> Staging:
    staging = Staging(protocol_id, exchange_id)
    staging.folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        staging.path(name).write_bytes(b"encrypted bytes")
    return staging


def schedule(protocol_id: int, exchange_id: int | None, kind: str, where: str, location: str, deadline: dt.date,
             rule: str = "test rule", sha256: str | None = None) -> int:
    with session_scope() as session:
        return ledger.schedule_deletion(
            session, protocol_id=protocol_id, exchange_id=exchange_id, kind=kind, where=where, location=location,
            deadline=deadline, rule=rule, sha256=sha256,
        ).id


def item(item_id: int) -> RetentionItem:
    with session_scope() as session:
        return session.get(RetentionItem, item_id)


def get_exchange(exchange_id: int) -> Exchange:
    with session_scope() as session:
        return session.get(Exchange, exchange_id)


def records(action: str) -> list[AuditRecord]:
    with session_scope() as session:
        return list(session.scalars(sa.select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id)))


def verify() -> bool:
    with session_scope() as session:
        return audit.verify(session).ok
