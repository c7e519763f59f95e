"""A structural feed already delivered is answered from the ledger, whatever its protocol became."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.feeds import steps
from welfare_exchange.feeds.interval import FeedInterval
from welfare_exchange.protocols import transition


def test_a_feed_redelivered_after_a_revocation_says_already_delivered_and_writes_nothing(feed_world):
    world = feed_world(1, missing_key=None)
    [m] = world.municipalities
    interval = FeedInterval(dt.date(2026, 10, 1), dt.date(2026, 11, 1))
    run = RunInfo(exchange_date=interval.last_day, dag_id="structural_feeds", run_id="manual__feed", task_id="deliver_feed")
    [feed] = steps.detect_changes(steps.select_municipalities(interval, run), interval, run)
    assert steps.deliver_feed(feed, run)["already_delivered"] is False
    with session_scope() as session:
        transition(session, m.protocol_id, "revoke", actor=audit.Actor.current_user(), reason="test")
    with session_scope() as session:
        last = session.scalar(sa.select(sa.func.max(AuditRecord.id)))

    again = steps.deliver_feed(feed, run)

    assert again["already_delivered"] is True and len(m.feeds()) == 1
    with session_scope() as session:
        exchange = session.get(Exchange, feed["exchange_id"])
        assert (exchange.state, exchange.failure_code) == ("delivered", None)
        assert session.scalars(sa.select(AuditRecord.action).where(AuditRecord.id > last)).all() == []  # nothing blocked
        assert audit.verify(session).ok
