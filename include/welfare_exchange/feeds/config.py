"""Configuration of the structural feeds, from the environment, with typed defaults.

Read at DAG-parse time (schedule, start date, deadline) and at run time (snapshot policy):
nothing here touches a database, a connection or the network.

=====================================================  =========================================
variable                                               meaning (default)
=====================================================  =========================================
``WELFARE_EXCHANGE_FEED_SCHEDULE``                     cron of the data intervals (``0 0 1 * *``:
                                                       monthly, calendar months in Brussels time)
``WELFARE_EXCHANGE_FEED_START_DATE``                   first interval's start, for catch-up
                                                       (``2026-01-01``)
``WELFARE_EXCHANGE_FEED_CATCHUP``                      schedule missed intervals (``true``)
``WELFARE_EXCHANGE_FEED_DEADLINE_HOURS``               hours after an interval ends by which its
                                                       feed must be delivered (``120``)
``WELFARE_EXCHANGE_FEED_DEADLINE_ALERT``               attach the Airflow Deadline Alert (``true``;
                                                       ``false`` under ``dag.test()``, see below)
``WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY``              ``wait``: deliver only from a store refreshed
                                                       after the interval ended; ``ignore`` (``wait``)
``WELFARE_EXCHANGE_FEED_SNAPSHOT_TIMEOUT_SECONDS``     how long to wait for that refresh (3 days)
``WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS``             how often the snapshot wait looks (``300``)
``WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE``           the CSV the import DAG loads by default
                                                       (``var/imports/entitlements.csv``)
``WELFARE_EXCHANGE_FEED_MAX_ACTIVE_TASKS``             mapped deliveries at once (``4``)
=====================================================  =========================================

Why the Deadline Alert can be switched off: in Airflow 3.3.2 ``dag.test()`` builds its
scheduler-side DAG with ``deserialize_dag(serialize_dag(dag))``, so ``dag.deadline`` holds the
raw alert definitions instead of their database ids, and a run that *succeeds* crashes in
``DagRun.update_state`` (``DeadlineAlertModel.get_by_id(<dict>)``). The scheduler loads DAGs from
the database and is not affected. Tests that use ``dag.test()`` set it to ``false``; the
``summarise_feeds`` task's deadline check still runs.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

TIMEZONE = "Europe/Brussels"


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {name} must be true or false, got {value!r}")


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"setting {name} must be a number, got {value!r}") from exc


@dataclass(frozen=True)
class FeedConfig:
    """The feeds' settings (see the module docstring for the variables)."""

    schedule: str
    start_date: dt.date
    catchup: bool
    deadline: dt.timedelta
    deadline_alert: bool
    snapshot_policy: str
    snapshot_timeout: dt.timedelta
    snapshot_poke: dt.timedelta
    max_active_tasks: int


def get_feed_config() -> FeedConfig:
    start = os.environ.get("WELFARE_EXCHANGE_FEED_START_DATE") or "2026-01-01"
    try:
        start_date = dt.date.fromisoformat(start)
    except ValueError as exc:
        raise ValueError(f"WELFARE_EXCHANGE_FEED_START_DATE must be YYYY-MM-DD, got {start!r}") from exc
    policy = os.environ.get("WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY") or "wait"
    if policy not in ("wait", "ignore"):
        raise ValueError(f"WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY must be 'wait' or 'ignore', got {policy!r}")
    return FeedConfig(
        schedule=os.environ.get("WELFARE_EXCHANGE_FEED_SCHEDULE") or "0 0 1 * *",
        start_date=start_date,
        catchup=_bool("WELFARE_EXCHANGE_FEED_CATCHUP", True),
        deadline=dt.timedelta(hours=_number("WELFARE_EXCHANGE_FEED_DEADLINE_HOURS", 120)),
        deadline_alert=_bool("WELFARE_EXCHANGE_FEED_DEADLINE_ALERT", True),
        snapshot_policy=policy,
        snapshot_timeout=dt.timedelta(seconds=_number("WELFARE_EXCHANGE_FEED_SNAPSHOT_TIMEOUT_SECONDS", 3 * 24 * 3600)),
        snapshot_poke=dt.timedelta(seconds=_number("WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS", 300)),
        max_active_tasks=int(_number("WELFARE_EXCHANGE_FEED_MAX_ACTIVE_TASKS", 4)),
    )
