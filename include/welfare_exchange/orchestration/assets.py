"""The Airflow Asset that stands for the entitlement store.

Refreshing the store through the ``entitlement_import`` DAG emits an event on
:data:`ENTITLEMENT_SNAPSHOT`; the structural feeds read the latest event (as an inlet) to know
whether the store was refreshed after the interval they report on closed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset

#: The entitlement store (children, beneficiaries, entitlements) as one data set.
ENTITLEMENT_SNAPSHOT = Asset(name="entitlement_snapshot", uri="welfare-exchange://entitlement-store", group="entitlements")


def latest_refresh(inlet_events: Any) -> dt.datetime | None:
    """When the store was last refreshed according to the Asset events (``None``: never).

    :param inlet_events: the task context's ``inlet_events`` accessor (the task must declare
        :data:`ENTITLEMENT_SNAPSHOT` as an inlet).
    """
    # Newest first, one event: the accessor asks the API server for exactly that.
    events = list(inlet_events[ENTITLEMENT_SNAPSHOT].ascending(False).limit(1))
    return events[0].timestamp if events else None
