"""Glue between the structural feed DAG's tasks and :mod:`welfare_exchange.feeds.steps`.

Each function reads what it needs from the running task's context (the data interval, the
task's ids), calls one step and turns errors no retry can fix (a revoked protocol, a missing
key connection) into an immediate task failure. Kept here so the DAG file only wires tasks.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import PokeReturnValue, get_current_context

from welfare_exchange.runinfo import RunInfo
from welfare_exchange.feeds import steps
from welfare_exchange.orchestration import assets
from welfare_exchange.orchestration.tasks import fail, permanent_errors_fail
from welfare_exchange.feeds.config import get_feed_config
from welfare_exchange.feeds.interval import FeedInterval

log = logging.getLogger(__name__)


def _run(context: Any, interval: FeedInterval) -> RunInfo:
    ti = context["ti"]
    return RunInfo(
        exchange_date=interval.end, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
        try_number=getattr(ti, "try_number", None),
    )


def snapshot_is_fresh() -> PokeReturnValue:
    """Poke: was the entitlement store refreshed (an Asset event) after this interval ended?"""
    context = get_current_context()
    interval = FeedInterval.from_context(context)
    if get_feed_config().snapshot_policy == "ignore":
        log.info("snapshot policy 'ignore': the feed for %s uses the entitlement store as it is", interval)
        return PokeReturnValue(is_done=True, xcom_value=None)
    refreshed = assets.latest_refresh(context["inlet_events"])
    if refreshed is not None and refreshed >= interval.end_moment:
        log.info("entitlement store refreshed at %s, after %s ended", refreshed.isoformat(), interval)
        return PokeReturnValue(is_done=True, xcom_value=refreshed.isoformat())
    log.info(
        "waiting for an entitlement store refreshed after %s (last refresh: %s); run the entitlement_import DAG",
        interval.end_moment.isoformat(), refreshed.isoformat() if refreshed else "never",
    )
    return PokeReturnValue(is_done=False)


def _call(step, *args):
    context = get_current_context()
    interval = FeedInterval.from_context(context)
    with permanent_errors_fail():  # a revoked protocol or a missing key does not get better by retrying
        return step(*args, interval, _run(context, interval))


def select_municipalities() -> list[dict[str, Any]]:
    return _call(steps.select_municipalities)


def detect_changes(feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _call(steps.detect_changes, feeds)


def deliver_feed(feed: dict[str, Any]) -> dict[str, Any]:
    context = get_current_context()
    context["feed_label"] = feed["label"]  # names the mapped task in the UI (map_index_template)
    interval = FeedInterval.parse(feed["interval"])
    with permanent_errors_fail():
        return steps.deliver_feed(feed, _run(context, interval))


def summarise_feeds(feeds: list[dict[str, Any]] | None) -> dict[str, Any]:
    context = get_current_context()
    interval = FeedInterval.from_context(context)
    if feeds is None:
        # This task runs whatever happened upstream (all_done): no plan means the snapshot wait,
        # the selection or the detection failed, and the run must not look successful.
        fail(
            f"structural feed {interval} was not planned: an earlier task (snapshot wait, selection or change "
            "detection) failed; see its log. Nothing was delivered. Clear the run once the cause is fixed."
        )
    with permanent_errors_fail():  # FeedIncomplete: clearing the failed deliveries fixes it, not a retry
        return steps.summarise(feeds, interval, _run(context, interval))


def start_datetime() -> dt.datetime:
    """The first interval's start as an aware datetime (catch-up begins there)."""
    from welfare_exchange.feeds.interval import BRUSSELS

    return dt.datetime.combine(get_feed_config().start_date, dt.time(), tzinfo=BRUSSELS)
