"""The audit trail: append-only, hash-chained, tamper-evident — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
import sqlalchemy as sa

from welfare_exchange import audit, insz
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.models import AuditHead, AuditRecord, AuditSubject

ACTOR = audit.Actor(type="system", name="airflow", dag_id="d", run_id="r", task_id="t", try_number=1)


def _numbers(n: int) -> list[str]:
    return [insz.make(dt.date(2010, 1, 1) + dt.timedelta(days=i), 1 + i % 900) for i in range(n)]


def _fill(n: int = 6) -> None:
    with session_scope() as session:
        for i in range(n):
            audit.record(
                session,
                f"test.step{i}",
                actor=ACTOR,
                counts={"rows": i},
                file_hashes={"request": "ab" * 32},
                subjects=_numbers(5) if i == 2 else None,
                subject=_numbers(1)[0] if i == 3 else None,
            )


def _verify():
    with session_scope() as session:
        return audit.verify(session)


def _drop_guard(url: str) -> None:
    """What an attacker with DDL rights on the database would do first."""
    with get_engine(url).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE audit_record DISABLE TRIGGER USER"))
            conn.execute(sa.text("ALTER TABLE audit_subject DISABLE TRIGGER USER"))
        else:
            for name in ("audit_record_no_update", "audit_record_no_delete", "audit_subject_no_update", "audit_subject_no_delete"):
                conn.execute(sa.text(f"DROP TRIGGER {name}"))


def test_chain_verifies_and_subjects_are_pseudonymised(project_db):
    _fill()
    result = _verify()
    assert result.ok and result.checked == 6
    with session_scope() as session:
        refs = session.scalars(sa.select(AuditSubject.subject_ref)).all()
        assert len(refs) == 5 and all(isinstance(r, bytes) and len(r) == 32 for r in refs)
        assert sorted(refs) == audit.trail.subject_keys(_numbers(5))
        stored = " ".join(str(v) for row in session.execute(sa.select(AuditRecord)).all() for v in row[0].__dict__.values())
    assert not insz.find_insz_shaped(stored)


def test_guard_refuses_update_and_delete(project_db):
    _fill(3)
    for statement in (
        "UPDATE audit_record SET outcome = 'failure' WHERE id = 1",
        "DELETE FROM audit_record WHERE id = 2",
        "DELETE FROM audit_subject",
        "UPDATE audit_subject SET subject_ref = 'x'",
    ):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with get_engine(project_db).begin() as conn:
                conn.execute(sa.text(statement))
    assert _verify().ok


@pytest.mark.parametrize(
    "tamper, broken",
    [
        ("UPDATE audit_record SET outcome = 'failure' WHERE id = 3", 3),
        ("UPDATE audit_record SET counts = NULL WHERE id = 4", 4),
        ("DELETE FROM audit_record WHERE id = 4", 4),
        ("DELETE FROM audit_record WHERE id = 6", 6),
        ("DELETE FROM audit_subject WHERE subject_ref IN (SELECT subject_ref FROM audit_subject LIMIT 1)", 3),
        ("UPDATE audit_subject SET subject_ref = 'ff' WHERE subject_ref IN (SELECT subject_ref FROM audit_subject LIMIT 1)", 3),
        ("swap", 4),
        ("insert", 7),
    ],
    ids=["edit-outcome", "edit-counts", "delete-middle", "delete-last", "delete-subject", "edit-subject", "reorder", "insert"],
)
def test_tampering_is_detected_after_dropping_the_guard(project_db, tamper, broken):
    _fill()
    _drop_guard(project_db)
    with get_engine(project_db).begin() as conn:
        if tamper == "swap":  # reorder: records 4 and 5 exchange places
            conn.execute(sa.text("UPDATE audit_record SET id = 1000 WHERE id = 4"))
            conn.execute(sa.text("UPDATE audit_record SET id = 4 WHERE id = 5"))
            conn.execute(sa.text("UPDATE audit_record SET id = 5 WHERE id = 1000"))
        elif tamper == "insert":  # a forged record chained correctly onto the last one
            last = conn.execute(sa.select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1)).first()
            fields = {name: getattr(last, name) for name in audit.trail.HASHED_FIELDS}
            fields.update(id=last.id + 1, prev_hash=last.record_hash, action="forged")
            conn.execute(sa.insert(AuditRecord).values(**fields, record_hash=audit.trail._hash(fields)))
        else:
            conn.execute(sa.text(tamper))
    result = _verify()
    assert not result.ok
    assert result.broken_id == broken, result.reason


def test_cli_verify_names_the_first_broken_record(project_db):
    _fill()
    ok = subprocess.run([sys.executable, "-m", "welfare_exchange.cli", "audit", "verify"], capture_output=True, text=True)
    assert ok.returncode == 0 and "6 records" in ok.stdout
    _drop_guard(project_db)
    with get_engine(project_db).begin() as conn:
        conn.execute(sa.text("UPDATE audit_record SET actor = 'mallory' WHERE id = 5"))
    bad = subprocess.run([sys.executable, "-m", "welfare_exchange.cli", "audit", "verify"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "record 5" in bad.stdout


def test_fact_key_makes_a_fact_idempotent(project_db):
    with session_scope() as session:
        first = audit.record(session, "result.delivered", actor=ACTOR, fact_key="exchange:1:delivered")
        again = audit.record(session, "result.delivered", actor=ACTOR, fact_key="exchange:1:delivered")
        assert first.id == again.id
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditRecord)) == 1
    assert _verify().ok


def test_messages_with_an_insz_are_refused(project_db):
    number = _numbers(1)[0]
    with session_scope() as session, pytest.raises(ValueError, match="may not contain an INSZ"):
        audit.record(session, "x", actor=ACTOR, message=f"about {number}")


def test_prune_carries_the_chain_head_over(project_db):
    _fill(5)
    with session_scope() as session:
        cutoff = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        # The anchor vouching for the records' age is checked against the store by
        # integrity.check (tests/audit/test_anchors.py); the chain alone carries the hash over.
        assert audit.prune(session, cutoff, actor=ACTOR, voucher=audit.PruneVoucher(1, "ab" * 32, 5)) == 5
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditRecord)) == 1  # the prune fact
        assert session.get(AuditHead, 1).last_id == 6
    _fill(2)
    assert _verify().ok


def test_concurrent_appenders_keep_one_chain(project_db):
    """Several processes appending at once (parallel tasks) never fork the chain."""
    script = (
        "from welfare_exchange import audit; from welfare_exchange.db import session_scope\n"
        "for i in range(15):\n"
        "    with session_scope() as s: audit.record(s, 'concurrent', actor=audit.Actor())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    result = _verify()
    assert result.ok and result.checked == 60


@pytest.mark.parametrize("key_length", [32, 64, 65, 100])
def test_bulk_subject_keys_are_the_standard_hmac(monkeypatch, key_length):
    """subject_keys copies one keyed hmac object per number: the bytes are hmac.digest's."""
    import hmac
    import secrets

    key = secrets.token_hex(key_length)[:key_length]
    monkeypatch.setenv("WELFARE_EXCHANGE_AUDIT_HMAC_KEY", key)
    numbers = _numbers(50)
    expected = sorted({hmac.digest(key.encode(), n.encode(), "sha256") for n in numbers})
    assert audit.trail.subject_keys(numbers + numbers[:5]) == expected
    assert [audit.trail.subject_key(n) for n in numbers[:3]] == [hmac.digest(key.encode(), n.encode(), "sha256") for n in numbers[:3]]


def test_a_large_subject_set_is_stored_whole(project_db):
    """More references than one bulk INSERT holds (400): every one stored, the chain verifies."""
    numbers = _numbers(1001)
    with session_scope() as session:
        audit.record(session, "request.validated", actor=ACTOR, exchange_id=1, subjects=numbers)
    with session_scope() as session:
        stored = sorted(session.scalars(sa.select(AuditSubject.subject_ref)).all())
        assert stored == audit.trail.subject_keys(numbers)
        assert audit.verify(session).ok
