"""A campaign whose report was delivered is answered from the ledger, whatever its protocol became."""

from __future__ import annotations

import sqlalchemy as sa

from tests.outreach.conftest import EXCHANGE_DATE
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.outreach import steps


def test_a_completed_campaign_rerun_after_a_revocation_is_neither_failed_nor_blocked(method2):
    run = RunInfo(exchange_date=EXCHANGE_DATE, dag_id="method2_state", run_id="manual__state", task_id="t", try_number=1)
    exchange_id = steps.open_campaign(method2.protocol_id, run)
    steps.select_families(exchange_id, run)
    steps.render_letters(exchange_id, run)
    steps.send_messages(exchange_id, run)
    assert steps.report_to_municipality(exchange_id, run)["already_delivered"] is False
    sent, reports = method2.smtp.count(), method2.municipality.read_outbox()
    method2.revoke()
    with session_scope() as session:
        last = session.scalar(sa.select(sa.func.max(AuditRecord.id)))

    assert "completed" in steps.recheck_gate(exchange_id, run)
    steps.send_messages(exchange_id, run)
    assert steps.report_to_municipality(exchange_id, run)["already_delivered"] is True

    [exchange] = method2.exchanges()
    assert (exchange.state, exchange.failure_code) == ("delivered", None)
    assert method2.smtp.count() == sent and method2.municipality.read_outbox() == reports
    with session_scope() as session:
        assert session.scalars(sa.select(AuditRecord.action).where(AuditRecord.id > last)).all() == []  # nothing blocked
        assert audit.verify(session).ok
