"""The structural feeds' Airflow Deadline Alert and its callback (the check is
:func:`welfare_exchange.feeds.deadline.check`; see that module for why there are two ways)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from welfare_exchange.feeds.config import FeedConfig, get_feed_config
from welfare_exchange.feeds.deadline import check, longest_interval
from welfare_exchange.feeds.interval import BRUSSELS, FeedInterval
from welfare_exchange.orchestration import hooks  # noqa: F401  (the triggerer reads connections through them)
from welfare_exchange.runinfo import Actor

log = logging.getLogger(__name__)


def deadline_alert(config: FeedConfig | None = None):
    """The DAG's Airflow Deadline Alert (see the module docstring)."""
    config = config or get_feed_config()
    return DeadlineAlert(
        name="structural feed not delivered in time",
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=longest_interval(config.schedule) + config.deadline,
        callback=AsyncCallback(feed_deadline_missed),
    )


async def feed_deadline_missed(context: dict[str, Any] | None = None, **_: Any) -> None:
    """The Deadline Alert's callback (runs in the triggerer): check and record, off the event loop."""
    run = (context or {}).get("dag_run") or {}
    start, end = run.get("data_interval_start"), run.get("data_interval_end")
    if not start or not end:
        log.error("deadline alert for a structural feed run without a data interval (run %s)", run.get("run_id"))
        return
    def _day(value: str) -> dt.date:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(BRUSSELS).date()

    interval = FeedInterval(_day(start), _day(end))
    actor = Actor(type="system", name="airflow", dag_id=run.get("dag_id"), run_id=run.get("run_id"),
                        task_id="deadline_alert")
    await asyncio.to_thread(check, interval, None, actor)
