"""What a step needs to know about the Airflow run it belongs to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from welfare_exchange import audit

#: Exchange dates are Belgian calendar days.
BRUSSELS = ZoneInfo("Europe/Brussels")


def exchange_date(context: Any) -> dt.date:
    """The day an exchange is about: the run's logical date (run-after for runs without one).

    Never the wall clock: a re-run or back-fill of a run decides exactly as the first run did.
    """
    moment = context.get("logical_date")
    if moment is None:
        moment = context["dag_run"].run_after
    return moment.astimezone(BRUSSELS).date()


@dataclass(frozen=True)
class RunInfo:
    """The acting task and its exchange date; ``dag_id`` etc. are ``None`` outside Airflow (the CLI)."""

    exchange_date: dt.date
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    @classmethod
    def from_context(cls, context: Any) -> RunInfo:
        ti = context["ti"]
        return cls(
            exchange_date=exchange_date(context),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=getattr(ti, "try_number", None),
        )

    @property
    def actor(self) -> audit.Actor:
        if self.dag_id is None:
            return audit.Actor.current_user()
        return audit.Actor(
            type="system", name="airflow", dag_id=self.dag_id, run_id=self.run_id, task_id=self.task_id,
            try_number=self.try_number,
        )
