"""The audit trail is kept for its legal term, then pruned with its chain head carried over."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.retention.helpers import ACTOR, records, signed_protocol, verify
from welfare_exchange import audit
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.models import AuditAnchor, AuditRecord
from welfare_exchange.retention import runner

TODAY = dt.date.today()  # audit records carry the wall-clock time they were written


def _count() -> int:
    with session_scope() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AuditRecord))


def test_nothing_is_pruned_within_the_legal_term(project_db):
    signed_protocol()
    before = _count()
    assert runner.prune_audit(TODAY + dt.timedelta(days=3653), actor=ACTOR)["records_pruned"] == 0
    assert _count() == before


def test_pruning_past_the_term_keeps_audit_verify_passing(project_db, anchoring, monkeypatch, capsys):
    """Pruned records are those an anchor older than the term covers; verify passes after the
    next anchoring covers the pruning (the term is shrunk to a day so the test need not wait)."""
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS", "0")
    later = TODAY + dt.timedelta(days=1)  # every record so far is past its term that day
    signed_protocol()
    anchored = runner.anchor_audit(actor=ACTOR)["last_id"]

    out = runner.prune_audit(later, actor=ACTOR)

    assert out["records_pruned"] == anchored
    assert [r.action for r in records("audit.pruned")] == ["audit.pruned"]
    assert verify()  # the chain starts where the chained pruning fact says
    assert main(["audit", "verify"]) == 1  # ... but no anchor covers that fact yet
    assert "is not covered by any anchor" in capsys.readouterr().out
    runner.anchor_audit(actor=ACTOR)
    assert main(["audit", "verify"]) == 0 and "audit chain intact" in capsys.readouterr().out
    # Records written after the prune chain on; a second prune carries the head over again.
    signed_protocol(nis="99904")
    runner.anchor_audit(actor=ACTOR)
    assert runner.prune_audit(later, actor=ACTOR)["records_pruned"] >= 1
    runner.anchor_audit(actor=ACTOR)
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditAnchor)) == 2
    assert verify()
    assert main(["audit", "verify"]) == 0, capsys.readouterr().out


def test_a_broken_chain_is_never_pruned_away(project_db):
    signed_protocol()
    with get_engine(project_db).begin() as conn:
        # Tamper with record 2 behind the guard's back, as someone with database rights could.
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE audit_record DISABLE TRIGGER USER"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_record_no_update"))
        conn.execute(sa.update(AuditRecord).where(AuditRecord.id == 2).values(message="edited"))
    with pytest.raises(runner.RetentionIncomplete, match="does not verify"):
        runner.prune_audit(TODAY + dt.timedelta(days=4000), actor=ACTOR)
    with session_scope() as session:
        assert session.get(AuditRecord, 2) is not None  # the evidence is still there
        assert not audit.verify(session).ok
