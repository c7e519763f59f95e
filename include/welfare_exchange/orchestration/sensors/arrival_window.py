"""The arrival window every request sensor shares: when it closes with nothing, the run ends skipped and the audit says so."""

from __future__ import annotations

import datetime as dt
from typing import Any, NoReturn

from airflow.sdk.bases.operator import TriggerFailureReason
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from welfare_exchange import audit
from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook
from welfare_exchange.orchestration.sensors.reschedule import RescheduleFloor

Window = tuple[dt.datetime, dt.datetime]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ArrivalWindow(RescheduleFloor):
    """Mixin for a request sensor (a ``BaseSensorOperator``): ``timeout`` is the arrival window.

    When the window closes with no request, :meth:`none_arrived` records
    ``request.none_arrived`` ("no request arrived in <where> between … and … UTC; nothing to
    do") and raises ``AirflowSkipException``: the task and the rest of the run end skipped,
    never failed. The deferred method's own outcome is never turned into a skip behind its
    back (``BaseSensorOperator`` does that with ``soft_fail``): "could not look" fails and retries.
    ``BaseSensorOperator``'s own timeout, which measures the same window from the same start, is
    the window closing too: should it fire first (between a look and its own check), the run
    still ends skipped and audited, never failed. Rescheduled pokes keep the
    :class:`~welfare_exchange.orchestration.sensors.reschedule.RescheduleFloor`.

    :attr awaited_in: where the request is awaited, in words, for the audit message.
    """

    awaited_in = "the channel"

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            end = now()
            window = self.reschedule_window(context) if self.reschedule else (end - dt.timedelta(seconds=self.timeout), end)
            self.none_arrived(context, *window)

    def reschedule_window(self, context) -> Window:
        """The window of a poking sensor: from its first reschedule (as ``BaseSensorOperator`` counts:
        a retried try keeps the window its first try opened)."""
        first = context["ti"].get_first_reschedule_date(context) if self.reschedule else None
        start = first or now()
        return start, start + dt.timedelta(seconds=self.timeout)

    def window_closed(self, context, window: Window) -> None:
        """End the run skipped (audited) when ``window`` has closed."""
        if now() >= window[1]:
            self.none_arrived(context, *window)

    def none_arrived(self, context, start: dt.datetime, end: dt.datetime) -> NoReturn:
        ti = context["ti"]
        message = (f"no request arrived in {self.awaited_in} between {start:%Y-%m-%d %H:%M:%S} and "
                   f"{end:%Y-%m-%d %H:%M:%S} UTC; nothing to do")
        with ProjectDbHook().session() as session:
            audit.record(session, "request.none_arrived", "skipped", actor=audit.Actor.from_context(context),
                         protocol_id=int(self.protocol_id), message=message,
                         # One fact per run: a retried try (under load) opens a window of its own,
                         # but the run has still only once found nothing.
                         fact_key=f"none_arrived:{ti.dag_id}:{ti.run_id}")
        self.log.info("%s", message)
        raise AirflowSkipException(f"{message}: this run ends skipped")

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context):
        if next_method == "__fail__" and (next_kwargs or {}).get("error") == TriggerFailureReason.TRIGGER_TIMEOUT:
            end = now()  # the deferral's timeout: the window closed in the triggerer
            self.none_arrived(context, end - dt.timedelta(seconds=self.timeout), end)
        if next_method == "__fail__":
            raise self.wait_failed(f"the wait failed in the triggerer ({(next_kwargs or {}).get('error', 'unknown')}); "
                                   "see the triggerer's log")
        return getattr(self, next_method)(context, **(next_kwargs or {}))

    def wait_failed(self, reason: str) -> Exception:
        """The error for a wait that could not look (not an AirflowException: it fails and retries)."""
        from welfare_exchange.errors import WelfareExchangeError

        return WelfareExchangeError(f"waiting for a request in {self.awaited_in} failed: {reason}. The task retries.")
