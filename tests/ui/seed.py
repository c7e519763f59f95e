"""A project database with what the Exchanges view shows: protocols, exchanges, retention, audit.

Seeds two protocols: a signed Method 1 protocol whose last exchange stopped after matching
(with one retention item overdue), and a revoked one without exchanges. The request file of
the exchange is deliberately *named after an INSZ* (municipalities name their own files): the
view must never show it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from welfare_exchange import audit, insz, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.protocols import create, transition

TODAY = dt.date(2026, 11, 28)
RUN_ID = "manual__2026-11-02T09:00:00+00:00"


@dataclass(frozen=True)
class Seeded:
    protocol_id: int
    revoked_protocol_id: int
    exchange_id: int
    dag_id: str
    run_id: str
    request_name: str


def seed(nis: str = "99101", municipality: str = "Testgemeente Zonnedorp") -> Seeded:
    """Fill the configured project database (``WELFARE_EXCHANGE_DB_URL``); returns the ids."""
    user = audit.Actor.current_user()
    # A checksum-valid synthetic number (serial 777): personal data as far as any scanner knows.
    request_name = f"aanvraag-{insz.make(dt.date(2015, 6, 7), 777)}.xlsx"
    with session_scope() as session:
        protocol = create(
            session, nis_code=nis, municipality=municipality, kind="method1", channel="sftp",
            key_connection=f"key_{nis}", college_decision_ref="CB/2026/7", college_decision_date=dt.date(2026, 9, 1),
            dpo_advice_date=dt.date(2026, 9, 15), valid_until=dt.date(2027, 12, 31), actor=user,
        )
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=user, on=dt.date(2026, 10, 1))
        from welfare_exchange.orchestration.dag_factory import method1_dag_id

        dag_id = method1_dag_id({"id": protocol.id, "nis_code": nis, "municipality": municipality})
        exchange, _ = ledger.open_exchange(
            session, protocol, request_sha256="ab" * 32, request_name=request_name, request_size=2048,
            dag_id=dag_id, run_id=RUN_ID, exchange_date=dt.date(2026, 11, 2),
        )
        ledger.update_exchange(session, exchange, state="validated", counts={"rows": 125, "valid": 121, "duplicates": 1})
        ledger.update_exchange(session, exchange, state="matched", counts={"matched_children": 47, "beneficiaries": 39})
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange.id, kind="request_file", where="sftp",
            location=f"{nis}/received/request-{exchange.id}", deadline=dt.date(2026, 11, 20), rule="request 30 days",
        )
        ledger.schedule_deletion(
            session, protocol_id=protocol.id, exchange_id=exchange.id, kind="staging", where="local",
            location=f"staging/{exchange.id}", deadline=dt.date(2027, 1, 31), rule="result 90 days",
        )

        other = create(
            session, nis_code="99102", municipality="Testgemeente Maanbeek", kind="method1", channel="sftp",
            key_connection="key_99102", college_decision_ref="CB/2026/8", college_decision_date=dt.date(2026, 9, 1),
            dpo_advice_date=dt.date(2026, 9, 15), actor=user,
        )
        for action in ("submit", "advise", "sign", "revoke"):
            transition(session, other.id, action, actor=user, on=dt.date(2026, 10, 1), reason="college decision withdrawn")
        return Seeded(protocol.id, other.id, exchange.id, dag_id, RUN_ID, request_name)
