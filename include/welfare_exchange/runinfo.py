"""Who acts and for which day: what a step needs to know about the run it belongs to.

The ground floor: imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

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
class Actor:
    """Who acts: the system (an Airflow task, with its ids and try number) or a named user."""

    type: str = "system"
    name: str = "welfare-exchange"
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    @classmethod
    def from_context(cls, context: Any) -> Actor:
        """The Airflow task described by a task context (``get_current_context()``)."""
        ti = context["ti"]
        return cls(
            type="system",
            name="airflow",
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=getattr(ti, "try_number", None),
        )

    @classmethod
    def current_user(cls) -> Actor:
        """The operator running the CLI."""
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "unknown"
        return cls(type="user", name=name)


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
    def actor(self) -> Actor:
        if self.dag_id is None:
            return Actor.current_user()
        return Actor(
            type="system", name="airflow", dag_id=self.dag_id, run_id=self.run_id, task_id=self.task_id,
            try_number=self.try_number,
        )
