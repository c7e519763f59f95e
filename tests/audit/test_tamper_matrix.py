"""The tamper matrix: every way someone with database rights (and write access to the anchor
store) could try to falsify the audit trail is detected by ``welfare-exchange audit verify``,
which names what broke and exits 1 — on SQLite and PostgreSQL.

The world before each attack: records 1..6, anchor 1 over record 6 (its fact is record 7),
records 8..9, anchor 2 over record 9 (fact 10), records 11..12. Anchors are time-stamped by a
real RFC 3161 TSA on loopback (``openssl ts``) and signed with an Ed25519 key made for the test.
The attacks are SQL through the engine, as a database user would send it; triggers are dropped
where the attack needs it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.audit.test_trail import ACTOR, _fill
from welfare_exchange import audit
from welfare_exchange.audit import anchors, trail
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.models import AuditAnchor, AuditHead, AuditPrunePermit, AuditRecord, AuditSubject


@dataclass
class World:
    url: str

    @property
    def store(self):
        return anchors.anchor_file()

    def lines(self) -> list[str]:
        return self.store.read_text().splitlines()

    def write_lines(self, lines: list[str]) -> None:
        self.store.write_text("".join(line + "\n" for line in lines))


def _world(url: str) -> World:
    _fill(6)  # record 3 carries 5 subject references
    anchors.anchor_head(actor=ACTOR)
    _fill(2)
    anchors.anchor_head(actor=ACTOR)
    _fill(2)
    with session_scope() as session:
        assert session.get(AuditHead, 1).last_id == 12
    return World(url)


def _drop_triggers(conn) -> None:
    """What an attacker with DDL rights does first: drop the append-only guard."""
    if conn.dialect.name == "postgresql":
        for table in ("audit_record", "audit_subject"):
            conn.execute(sa.text(f"DROP TRIGGER {table}_append_only ON {table}"))
    else:
        for name in ("audit_record_no_update", "audit_record_no_delete", "audit_subject_no_update", "audit_subject_no_delete"):
            conn.execute(sa.text(f"DROP TRIGGER {name}"))


def _hash_of(conn, record_id: int) -> str:
    return conn.scalar(sa.select(AuditRecord.record_hash).where(AuditRecord.id == record_id))


def _rechain(conn, start: int, prev: str, change: dict | None = None) -> str:
    """Recompute every hash from record ``start`` on (changing it first); moves the head row."""
    rows = conn.execute(sa.select(AuditRecord).where(AuditRecord.id >= start).order_by(AuditRecord.id)).all()
    for row in rows:
        fields = {name: getattr(row, name) for name in trail.HASHED_FIELDS}
        if row.id == start and change:
            fields.update(change)
        fields["prev_hash"] = prev
        prev = trail._hash(fields)
        conn.execute(sa.update(AuditRecord).where(AuditRecord.id == row.id).values(**fields, record_hash=prev))
    conn.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_id=rows[-1].id, last_hash=prev))
    return prev


def _append_forged(conn, action: str, **values) -> int:
    """A record appended exactly as ``audit.record`` would: chained, head moved."""
    head = conn.execute(sa.select(AuditHead).where(AuditHead.id == 1)).one()
    fields = {name: None for name in trail.HASHED_FIELDS}
    fields.update(
        id=head.last_id + 1, recorded_at=dt.datetime.now(dt.timezone.utc).isoformat(), actor_type="system",
        actor="airflow", action=action, outcome="success", prev_hash=head.last_hash, **values,
    )
    digest = trail._hash(fields)
    conn.execute(sa.insert(AuditRecord).values(**fields, record_hash=digest))
    conn.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_id=fields["id"], last_hash=digest))
    return fields["id"]


def _cut_oldest(conn, through: int, *, via_permit: bool) -> None:
    """Delete records 1..through and their subject references, past the guard."""
    if via_permit:
        conn.execute(sa.insert(AuditPrunePermit).values(through_id=through))
    else:
        _drop_triggers(conn)
    conn.execute(sa.delete(AuditSubject).where(AuditSubject.audit_id <= through))
    conn.execute(sa.delete(AuditRecord).where(AuditRecord.id <= through))
    if via_permit:
        conn.execute(sa.delete(AuditPrunePermit))


# --------------------------------------------------------------------------- the attacks


def edit(world, conn):
    _drop_triggers(conn)
    conn.execute(sa.update(AuditRecord).where(AuditRecord.id == 3).values(outcome="failure"))


def delete(world, conn):
    _drop_triggers(conn)
    conn.execute(sa.delete(AuditRecord).where(AuditRecord.id == 4))


def insert(world, conn):
    _drop_triggers(conn)  # a record slipped in after record 5, chained onto it; the rest move up
    conn.execute(sa.update(AuditRecord).where(AuditRecord.id > 5).values(id=AuditRecord.id + 1000))
    conn.execute(sa.update(AuditRecord).where(AuditRecord.id > 1000).values(id=AuditRecord.id - 999))
    fields = {name: None for name in trail.HASHED_FIELDS}
    fields.update(id=6, recorded_at="2026-01-01T00:00:00+00:00", actor_type="user", actor="x", action="forged",
                  outcome="success", prev_hash=_hash_of(conn, 5))
    conn.execute(sa.insert(AuditRecord).values(**fields, record_hash=trail._hash(fields)))


def swap(world, conn):
    _drop_triggers(conn)
    conn.execute(sa.text("UPDATE audit_record SET id = 1000 WHERE id = 4"))
    conn.execute(sa.text("UPDATE audit_record SET id = 4 WHERE id = 5"))
    conn.execute(sa.text("UPDATE audit_record SET id = 5 WHERE id = 1000"))


def cut_head(world, conn):
    _drop_triggers(conn)
    conn.execute(sa.delete(AuditRecord).where(AuditRecord.id > 10))


def cut_head_moving_the_head_row(world, conn):
    _drop_triggers(conn)  # records 9..12 go, anchored record 9 among them; the head row follows
    conn.execute(sa.delete(AuditRecord).where(AuditRecord.id >= 9))
    conn.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_id=8, last_hash=_hash_of(conn, 8)))


def cut_tail(world, conn):
    _cut_oldest(conn, 3, via_permit=False)


def forged_marker_via_permit(world, conn):
    carried = _hash_of(conn, 3)
    _cut_oldest(conn, 3, via_permit=True)
    conn.execute(sa.insert(AuditAnchor).values(through_id=3, head_hash=carried, pruned_at="2026-01-01", records_pruned=3))


def forged_marker_triggers_dropped(world, conn):
    carried = _hash_of(conn, 3)
    _cut_oldest(conn, 3, via_permit=False)
    conn.execute(sa.insert(AuditAnchor).values(through_id=3, head_hash=carried, pruned_at="2026-01-01", records_pruned=3))


def forged_chained_pruning_fact(world, conn):
    """The cleverest cut: the oldest records go and a chained pruning fact is appended that names
    a real anchor as its voucher — but nothing outside the database covers it."""
    carried = _hash_of(conn, 3)
    _cut_oldest(conn, 3, via_permit=True)
    conn.execute(sa.insert(AuditAnchor).values(through_id=3, head_hash=carried, pruned_at="2026-01-01", records_pruned=3))
    first_line = world.lines()[0]
    _append_forged(
        conn, trail.PRUNED_ACTION,
        counts={"records": 3, "from_id": 1, "through_id": 3, "anchor_sequence": 1},
        file_hashes={"carried_over_hash": carried, "anchor_line": anchors.AnchorLine(1, first_line, {}).digest},
    )


def rewritten_whole(world, conn):
    _drop_triggers(conn)
    _rechain(conn, 3, _hash_of(conn, 2), {"outcome": "failure"})


def subject_reference_removed(world, conn):
    _drop_triggers(conn)
    victim = conn.scalar(sa.select(AuditSubject.subject_ref).where(AuditSubject.audit_id == 3).limit(1))
    conn.execute(sa.delete(AuditSubject).where(AuditSubject.subject_ref == victim, AuditSubject.audit_id == 3))


def anchors_deleted(world, conn):
    world.store.unlink()


def anchors_emptied(world, conn):
    world.store.write_text("")


def anchors_shortened(world, conn):
    world.write_lines(world.lines()[:1])


def anchor_edited(world, conn):
    lines = world.lines()
    lines[0] = lines[0].replace('"anchored_at":"', '"anchored_at":"1', 1)
    world.write_lines(lines)


def anchor_edited_to_a_rewritten_chain(world, conn):
    """The chain rewritten whole, and the anchors edited to its new hashes."""
    _drop_triggers(conn)
    _rechain(conn, 3, _hash_of(conn, 2), {"outcome": "failure"})
    lines = [json.loads(line) for line in world.lines()]
    for line in lines:
        line["last_hash"] = _hash_of(conn, line["last_id"])
    world.write_lines([json.dumps(line, sort_keys=True, separators=(",", ":")) for line in lines])


def forged_anchor_line(world, conn):
    """An anchor over the current head, chained onto the store, without time-stamp or signature."""
    last = world.lines()[-1]
    line = {"seq": 3, "prev": anchors.AnchorLine(2, last, {}).digest, "anchored_at": "2026-11-29T00:00:00+00:00",
            "last_id": 12, "last_hash": _hash_of(conn, 12)}
    world.write_lines([*world.lines(), json.dumps(line, sort_keys=True, separators=(",", ":"))])


def forged_anchor_line_with_borrowed_token(world, conn):
    """As above, with the time-stamp and signature of the genuine anchor before it copied in."""
    last = world.lines()[-1]
    genuine = json.loads(last)
    line = {"seq": 3, "prev": anchors.AnchorLine(2, last, {}).digest, "anchored_at": genuine["anchored_at"],
            "last_id": 12, "last_hash": _hash_of(conn, 12), "tsr": genuine["tsr"], "sig": genuine["sig"]}
    world.write_lines([*world.lines(), json.dumps(line, sort_keys=True, separators=(",", ":"))])


ATTACKS = {
    edit: r"BROKEN at record 3: record 3 was altered \(hash mismatch\)",
    delete: r"BROKEN at record 4: record 4 is missing",
    insert: r"BROKEN at record 7: record 7 does not chain onto its predecessor",
    swap: r"BROKEN at record 4: record 4 does not chain onto its predecessor",
    cut_head: r"BROKEN at record 12: record 12 was removed from the end of the chain",
    cut_head_moving_the_head_row: r"anchor 2 names record 9, beyond the chain's head \(record 8\): records were removed",
    cut_tail: r"records 1\.\.3 are missing: the trail starts at record 4 and no chained audit\.pruned fact vouches",
    forged_marker_via_permit: r"records 1\.\.3 are missing.*pruning marker audit_anchor #\d+ is forged",
    forged_marker_triggers_dropped: r"records 1\.\.3 are missing.*pruning marker audit_anchor #\d+ is forged",
    forged_chained_pruning_fact: r"the pruning in record 13 \(records 1\.\.3\) is not covered by any anchor",
    rewritten_whole: r"record 6 no longer has the hash anchored in anchor 1 .*rewritten",
    subject_reference_removed: r"BROKEN at record 3: record 3: 1 of its 5 subject references were removed",
    anchors_deleted: r"anchor store .* is missing, but the trail records 2 anchoring\(s\), the latest \(anchor 2\) in record 10",
    anchors_emptied: r"anchor store .* is empty, but the trail records 2 anchoring\(s\)",
    anchors_shortened: r"the anchor store ends at anchor 1, but the trail records anchor 2 \(record 10\): the anchor store was shortened",
    anchor_edited: r"anchor 1 \(line 1\) is not authentic: its signature does not check out",
    anchor_edited_to_a_rewritten_chain: r"anchor 1 \(line 1\) is not authentic: its RFC 3161 time-stamp does not check out",
    forged_anchor_line: r"anchor 3 \(line 3\) carries no RFC 3161 time-stamp: forged",
    forged_anchor_line_with_borrowed_token: r"anchor 3 \(line 3\) is not authentic: its RFC 3161 time-stamp does not check out",
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=[a.__name__ for a in ATTACKS])
def test_every_tampering_is_detected_and_named(project_db, anchoring, attack, capsys):
    world = _world(project_db)
    assert main(["audit", "verify"]) == 0, capsys.readouterr().out
    capsys.readouterr()

    with get_engine(project_db).begin() as conn:
        attack(world, conn)

    code = main(["audit", "verify"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert re.search(ATTACKS[attack], out), out
    assert "checked:" in out and "runbook:" in out
    # The anchoring task refuses to vouch for a trail in that state, whatever the attack.
    with pytest.raises(anchors.AnchoringRefused):
        anchors.anchor_head(actor=ACTOR)


def test_the_intact_world_says_what_was_checked(project_db, anchoring, capsys):
    _world(project_db)
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "audit chain intact: 12 records verified; 2 anchor(s) agree" in out
    for what in (
        "records: 12 verified (records 1..12",
        "subject references: 5 verified",
        "anchors: 2 in",
        "time-stamps: 2 RFC 3161 token(s) verified; signatures: 2 verified",
        "anchorings recorded in the trail: 2 matched",
        "3 record(s) after the latest anchor",  # its own fact, 11, 12
    ):
        assert what in out, out


def test_a_forged_pruning_fact_is_never_anchored(project_db, anchoring, monkeypatch):
    """Waiting for the next daily anchoring does not help the forger: the anchor it names as
    voucher is younger than the legal term, so the anchoring refuses and says why."""
    world = _world(project_db)
    with get_engine(project_db).begin() as conn:
        forged_chained_pruning_fact(world, conn)
    with pytest.raises(anchors.AnchoringRefused, match=r"within the legal term of 3653 days.*records were cut, not pruned"):
        anchors.anchor_head(actor=ACTOR)
    assert len(world.lines()) == 2  # nothing written over it


def test_audit_verify_chain_only_still_reports_the_cut(project_db, anchoring):
    """``audit.verify`` (the database's own evidence) already refuses a start nothing vouches for."""
    world = _world(project_db)
    with get_engine(project_db).begin() as conn:
        cut_tail(world, conn)
    with session_scope() as session:
        result = audit.verify(session)
    assert not result.ok and "records 1..3 are missing" in result.reason
