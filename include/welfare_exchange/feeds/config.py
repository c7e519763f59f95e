"""Configuration of the structural feeds, read by :mod:`welfare_exchange.settings` with typed defaults.

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
``WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS``             how often the snapshot wait looks (``60``)
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

from welfare_exchange.settings import TIMEZONE, FeedConfig, get_feed_config

__all__ = ["TIMEZONE", "FeedConfig", "get_feed_config"]
