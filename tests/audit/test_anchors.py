"""Anchors outside the database catch what the chain alone cannot: a chain rewritten whole.

Someone with write access to the project database edits a record and then recomputes every
hash after it, head row included — ``audit verify``'s chain check passes again. The head
anchored in the file the day before no longer matches, and ``audit verify`` says so.
"""

from __future__ import annotations

import json
import subprocess
import sys

import sqlalchemy as sa

from tests.audit.test_trail import ACTOR, _drop_guard, _fill
from welfare_exchange import audit
from welfare_exchange.audit import anchors, trail
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.models import AuditHead, AuditRecord


def _cli_verify() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "welfare_exchange.cli", "audit", "verify"], capture_output=True, text=True)


def _rewrite_from(url: str, record_id: int, **change) -> None:
    """The attack: change a record, re-chain every record after it, move the head along."""
    _drop_guard(url)
    with get_engine(url).begin() as conn:
        rows = conn.execute(sa.select(AuditRecord).where(AuditRecord.id >= record_id).order_by(AuditRecord.id)).all()
        prev = conn.scalar(sa.select(AuditRecord.record_hash).where(AuditRecord.id == record_id - 1))
        for row in rows:
            fields = {name: getattr(row, name) for name in trail.HASHED_FIELDS}
            if row.id == record_id:
                fields.update(change)
            fields["prev_hash"] = prev
            prev = trail._hash(fields)
            conn.execute(sa.update(AuditRecord).where(AuditRecord.id == row.id).values(**fields, record_hash=prev))
        conn.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_hash=prev))


def test_a_chain_rewritten_whole_is_caught_by_yesterdays_anchor(project_db):
    _fill()
    with session_scope() as session:
        line = anchors.write_anchor(session)
        audit.record(session, "test.later", actor=ACTOR)
    assert line["last_id"] == 6
    ok = _cli_verify()
    assert ok.returncode == 0 and "7 records verified; 1 anchor(s)" in ok.stdout, ok.stdout

    _rewrite_from(project_db, 3, outcome="failure")
    with session_scope() as session:
        assert audit.verify(session).ok  # the chain alone is consistent again
        check = anchors.check_anchors(session)
    assert not check.ok and "record 6" in check.mismatch
    bad = _cli_verify()
    assert bad.returncode == 1 and "REWRITTEN" in bad.stdout and "record 6" in bad.stdout


def test_records_cut_off_with_the_head_moved_back_are_caught(project_db):
    _fill()
    with session_scope() as session:
        anchors.write_anchor(session)
    _drop_guard(project_db)
    with get_engine(project_db).begin() as conn:
        new_head = conn.scalar(sa.select(AuditRecord.record_hash).where(AuditRecord.id == 4))
        conn.execute(sa.delete(AuditRecord).where(AuditRecord.id > 4))
        conn.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_id=4, last_hash=new_head))
    with session_scope() as session:
        assert audit.verify(session).ok
        check = anchors.check_anchors(session)
    assert not check.ok and "beyond the chain's head" in check.mismatch


def test_the_daily_run_anchors_after_recording_it_and_pruned_anchors_still_pass(project_db):
    import datetime as dt

    from welfare_exchange.retention import runner

    _fill(2)
    with session_scope() as session:
        anchors.write_anchor(session)  # names record 2, which pruning will remove
    out = runner.run(dt.date(2040, 1, 1), actor=ACTOR)  # everything is past its legal term by then
    assert out["audit"]["records_pruned"] >= 2
    lines = [json.loads(x) for x in anchors.anchor_file().read_text().splitlines()]
    assert len(lines) == 2
    with session_scope() as session:
        last = session.scalar(sa.select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1))
        assert last.action == "audit.anchored" and lines[-1] == {**lines[-1], "last_id": last.id, "last_hash": last.record_hash}
        check = anchors.check_anchors(session)
    assert check.ok and check.checked == 1 and check.pruned == 1
