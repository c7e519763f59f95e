"""End-to-end: the structural_feeds DAG under ``dag.test()`` against the real OpenSSH server."""

from __future__ import annotations

import os

import sqlalchemy as sa

from tests.dagutil import task_states
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, RetentionItem


def _rows(m, data: bytes) -> list[tuple[str, str, str]]:
    sheet = m.open_feed(data)["Wijzigingen"]
    assert sheet[0][:4] == ["Wijziging", "Met terugwerkende kracht", "INSZ kind", "INSZ begunstigde"]
    return [(r[0], r[2], r[3]) for r in sheet[1:]]


def test_one_interval_three_municipalities_one_failing(feed_world, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_DEADLINE_HOURS", "0")  # October's feed is overdue by now
    world = feed_world(3, missing_key=2)
    ok, broken = world.municipalities[:2], world.municipalities[2]

    run = world.run("2026-10")

    states = task_states(run, by_map_index=True)
    assert run.state == "failed", states
    mapped = {k[1]: v for k, v in states.items() if k[0] == "deliver_feed"}
    assert sorted(mapped.values()) == ["failed", "success", "success"], states
    assert states[("summarise_feeds", -1)] == "failed"  # ran although a delivery failed, and says so
    names = {ti.map_index: ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == "deliver_feed"}
    assert sorted(names.values()) == sorted(f"{m.nis} Testgemeente {m.nis}" for m in world.municipalities)
    for m in ok:
        [(name, data)] = m.feeds().items()
        assert name.endswith("_2026-10-01_2026-10-31.xlsx")
        assert _rows(m, data) == m.expected("2026-10")
    assert broken.feeds() == {}
    assert len(world.deliveries()) == 2
    actions = world.actions()
    assert actions.count(("feed.delivered", "success")) == 2
    assert ("feed.summary", "partial") in actions
    assert ("feed.deadline_missed", "failure") in actions
    assert ("task.failed", "failure") in actions
    with session_scope() as session:
        missed = session.scalar(sa.select(AuditRecord).where(AuditRecord.action == "feed.deadline_missed"))
        assert missed.counts["not_delivered"] == 1 and str(broken.protocol_id) in missed.message
        kinds = sorted(session.scalars(sa.select(RetentionItem.kind)))
        assert kinds == ["result_file", "result_file", "staging", "staging"]
        assert audit.verify(session).ok


def test_backfill_three_months_is_deterministic_and_a_rerun_sends_nothing(feed_world):
    world = feed_world(2, missing_key=None)
    months = ["2026-08", "2026-09", "2026-10"]

    for month in months:  # a back-fill: three logical dates, oldest first
        run = world.run(month)
        assert run.state == "success", task_states(run, by_map_index=True)
    first = {m.nis: m.feeds() for m in world.municipalities}
    for m in world.municipalities:
        assert len(first[m.nis]) == 3
        for month in months:
            [data] = [v for k, v in first[m.nis].items() if f"_{month}-01_" in k]
            assert _rows(m, data) == m.expected(month)  # the split record and the zorgtoeslag never show
    mtimes = {p: os.stat(p).st_mtime_ns for m in world.municipalities for p in m.sftp.local_dir("outbox").iterdir()}

    for month in months:  # the whole back-fill again
        run = world.run(month)
        assert run.state == "success", task_states(run, by_map_index=True)

    assert {m.nis: m.feeds() for m in world.municipalities} == first  # identical bytes
    assert {p: os.stat(p).st_mtime_ns for p in mtimes} == mtimes  # nothing uploaded again
    assert len(world.deliveries()) == 6
    assert world.actions().count(("feed.delivered", "success")) == 6
    assert len(world.exchanges()) == 6  # one per (protocol, interval), also across runs
    with session_scope() as session:
        assert audit.verify(session).ok


def test_a_revoked_protocol_blocks_its_feed_only(feed_world):
    from welfare_exchange.protocols import transition

    world = feed_world(2, missing_key=None)
    with session_scope() as session:
        transition(session, world.municipalities[0].protocol_id, "revoke", actor=audit.Actor.current_user(), reason="test")

    run = world.run("2026-09")

    assert run.state == "success", task_states(run, by_map_index=True)  # a revoked protocol is simply not selected
    assert world.municipalities[0].feeds() == {}
    assert len(world.municipalities[1].feeds()) == 1
