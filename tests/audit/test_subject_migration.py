"""Migration 0004: subject references written as hex text before it still verify and are found after it.

The trail written under revision 0003 is made the way 0003's writer made it (hex references,
``(audit_id, subject_ref)`` rows); upgrading converts them losslessly to 32-byte keys, the chain
verifies, subject access finds the person, and a downgrade and upgrade round-trip keeps all of it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from tests.audit.test_trail import ACTOR, _numbers
from welfare_exchange import audit
from welfare_exchange.audit import trail
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.engine import alembic_config, dispose_engines, upgrade
from welfare_exchange.db.models import AuditRecord, AuditSubject


def _write_as_0003(session, audit_id: int, refs: list[bytes]) -> None:
    """What trail._insert_subjects wrote before 0004."""
    session.execute(
        sa.text("INSERT INTO audit_subject (audit_id, subject_ref) VALUES (:a, :r)"),
        [{"a": audit_id, "r": ref.hex()} for ref in refs],
    )


def test_hex_references_survive_the_upgrade_and_a_round_trip(project_db, monkeypatch):
    command.downgrade(alembic_config(project_db), "0003")
    dispose_engines()
    people = _numbers(40)
    with monkeypatch.context() as patch, session_scope() as session:
        patch.setattr(trail, "_insert_subjects", _write_as_0003)
        audit.record(session, "request.validated", actor=ACTOR, exchange_id=7, subjects=people)
        audit.record(session, "entitlements.matched", actor=ACTOR, exchange_id=7, subjects=people[:5])
        audit.record(session, "result.built", actor=ACTOR, exchange_id=7)
    dispose_engines()

    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        assert audit.verify(session).ok
        stored = session.scalars(sa.select(AuditSubject.subject_ref)).all()
        assert len(stored) == 45 and all(isinstance(r, bytes) and len(r) == 32 for r in stored)
        hits = session.scalars(
            sa.select(AuditRecord.action)
            .join(AuditSubject, AuditSubject.audit_id == AuditRecord.id)
            .where(AuditSubject.subject_ref == trail.subject_key(people[0]))
            .order_by(AuditRecord.id)
        ).all()
        assert hits == ["request.validated", "entitlements.matched"]
        # New records go into the new table beside the converted ones, and the chain still holds.
        audit.record(session, "request.validated", actor=ACTOR, exchange_id=8, subjects=people[:3])
        assert audit.verify(session).ok

    command.downgrade(alembic_config(project_db), "0003")
    dispose_engines()
    with get_engine(project_db).connect() as conn:
        refs = conn.execute(sa.text("SELECT subject_ref FROM audit_subject")).scalars().all()
    assert len(refs) == 48 and all(isinstance(r, str) and len(r) == 64 for r in refs)
    dispose_engines()
    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        assert audit.verify(session).ok


def test_guard_still_refuses_edits_after_the_upgrade(project_db):
    with session_scope() as session:
        audit.record(session, "request.validated", actor=ACTOR, exchange_id=1, subjects=_numbers(3))
    for statement in ("DELETE FROM audit_subject", "UPDATE audit_subject SET audit_id = audit_id"):
        try:
            with get_engine(project_db).begin() as conn:
                conn.execute(sa.text(statement))
        except sa.exc.DatabaseError as exc:
            assert "append-only" in str(exc)
        else:
            raise AssertionError(f"{statement} was not refused")
