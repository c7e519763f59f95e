"""The delivery deadline of a feed: due a configurable time after its interval ends.

Two ways a missed deadline is noticed, both ending in :func:`check` — which records one
``feed.deadline_missed`` audit fact per interval (idempotent) and logs an alert an operator
can act on (which interval, how many municipalities are still waiting; never personal data):

* the DAG's Airflow 3 **Deadline Alert** (:func:`welfare_exchange.orchestration.deadline.deadline_alert`):
  the scheduler notices the run is not finished in time and the triggerer runs
  :func:`~welfare_exchange.orchestration.deadline.feed_deadline_missed`, which calls :func:`check` — this
  catches a run that is stuck or never got going;
* the run's own ``summarise_feeds`` task, which calls :func:`check` at its end — this catches
  a run that finished after the deadline or with municipalities undelivered, and also works
  under ``dag.test()``, which has no scheduler to evaluate Deadline Alerts.

A Deadline Alert's reference is the run's logical date; a scheduled run's logical date is its
interval's start, so the alert's interval is the schedule's longest data interval plus the
configured delay (for monthly feeds: 31 days + the delay; at most three days later than exact).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa

from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, SideEffect
from welfare_exchange.feeds.config import TIMEZONE, FeedConfig, get_feed_config
from welfare_exchange.feeds.gate import open_protocols
from welfare_exchange.feeds.interval import FeedInterval

log = logging.getLogger(__name__)


def due(interval: FeedInterval, config: FeedConfig | None = None) -> dt.datetime:
    """When the feed of ``interval`` must have been delivered at the latest."""
    return interval.end_moment + (config or get_feed_config()).deadline


def longest_interval(schedule: str, samples: int = 24) -> dt.timedelta:
    """The longest data interval of a cron schedule over the next ``samples`` intervals."""
    from croniter import croniter
    from zoneinfo import ZoneInfo

    start = dt.datetime(2026, 1, 1, tzinfo=ZoneInfo(TIMEZONE))
    it = croniter(schedule, start)
    previous = it.get_next(dt.datetime)
    longest = dt.timedelta(0)
    for _ in range(samples):
        current = it.get_next(dt.datetime)
        longest = max(longest, current - previous)
        previous = current
    return longest


def delivery_state(session, interval: FeedInterval, protocol_ids: list[int]) -> dict[int, dt.datetime | None]:
    """Per protocol: when its feed of ``interval`` was delivered (``None``: not delivered)."""
    keys = {interval.exchange_key(pid): pid for pid in protocol_ids}
    state: dict[int, dt.datetime | None] = {pid: None for pid in protocol_ids}
    if not keys:
        return state
    rows = session.execute(
        sa.select(Exchange.protocol_id, SideEffect.done_at)
        .join(SideEffect, sa.and_(SideEffect.exchange_id == Exchange.id, SideEffect.kind == "feed_delivered", SideEffect.state == "done"))
        .where(Exchange.request_sha256.in_(list(keys)))
    )
    for pid, done_at in rows:
        if pid in state:
            state[pid] = done_at if done_at is None or done_at.tzinfo else done_at.replace(tzinfo=dt.timezone.utc)
    return state


def check(
    interval: FeedInterval,
    protocol_ids: list[int] | None,
    actor: audit.Actor,
    *,
    now: dt.datetime | None = None,
    config: FeedConfig | None = None,
) -> dict[str, Any]:
    """Record ``feed.deadline_missed`` (once per interval) when the deadline passed undelivered.

    :param protocol_ids: the municipalities due a feed; ``None`` — every structural protocol
        open for the interval (what the scheduler's alert uses, having no task output).
    :returns: ``{"due", "missed", "waiting", "late"}`` (counts, no personal data).
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    deadline = due(interval, config)
    with session_scope() as session:
        if protocol_ids is None:
            protocol_ids = [p.id for p in open_protocols(session, interval)]
        state = delivery_state(session, interval, protocol_ids)
        waiting = sorted(pid for pid, at in state.items() if at is None)
        late = sorted(pid for pid, at in state.items() if at is not None and at > deadline)
        missed = now > deadline and bool(waiting or late)
        if missed:
            audit.record(
                session, "feed.deadline_missed", "failure", actor=actor,
                counts={"municipalities": len(state), "not_delivered": len(waiting), "delivered_late": len(late)},
                message=f"structural feed {interval}: due by {deadline.isoformat()}; {len(waiting)} of {len(state)} "
                f"municipalities not delivered (protocols {', '.join(map(str, waiting)) or '-'}), {len(late)} delivered late. "
                "Runbook: 'A structural feed is late'.",
                fact_key=f"feed:{interval}:deadline_missed",
            )
    if missed:
        log.error(
            "DEADLINE MISSED: structural feed %s was due by %s; %d of %d municipalities not delivered, %d late",
            interval, deadline.isoformat(), len(waiting), len(state), len(late),
        )
    return {"due": deadline.isoformat(), "missed": missed, "waiting": len(waiting), "late": len(late)}
