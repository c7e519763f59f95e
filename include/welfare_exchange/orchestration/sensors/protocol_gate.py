"""Sensor that holds an exchange until its protocol allows it, and fails it when it never will."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseSensorOperator

from welfare_exchange.runinfo import exchange_date
from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook
from welfare_exchange.orchestration.tasks import fail
from welfare_exchange.orchestration.sensors.reschedule import RescheduleFloor
from welfare_exchange.orchestration.triggers.protocol_gate import ProtocolGateTrigger


class ProtocolGateSensor(RescheduleFloor, BaseSensorOperator):
    """Wait until the protocol is signed and valid on the exchange date.

    Deferrable by default (the wait costs no worker slot); with ``deferrable=False`` it pokes in
    ``reschedule`` mode. Fails at once — no retry — when the protocol is revoked, suspended or
    expired, or does not allow the channel this exchange uses.

    :param protocol_id: the protocol the exchange runs under.
    :param requirements: e.g. ``{"channel": "sftp", "kind": "method1"}``.
    :param deferrable: wait in the triggerer instead of a worker.
    """

    template_fields = ("protocol_id",)

    def __init__(self, *, protocol_id: int, requirements: dict[str, Any] | None = None, deferrable: bool = True, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.protocol_id = protocol_id
        self.requirements = requirements or {}
        self.deferrable = deferrable

    def _decide(self, on: dt.date):
        decision = ProjectDbHook().gate_decision(int(self.protocol_id), on, **self.requirements)
        if decision.state == "closed":
            fail(f"protocol gate closed: {decision.reason}. Nothing was read or sent.")
        return decision

    def poke(self, context) -> bool:
        decision = self._decide(exchange_date(context))
        self.log.info("protocol gate: %s", decision.reason)
        return decision.is_open

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        on = exchange_date(context)
        decision = self._decide(on)  # the usual case — already signed — needs no deferral
        self.log.info("protocol gate: %s", decision.reason)
        if decision.is_open:
            return None
        self.defer(
            trigger=ProtocolGateTrigger(int(self.protocol_id), on.isoformat(), self.requirements, self.poke_interval),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        if not event or event.get("status") != "open":
            reason = (event or {}).get("reason", "no decision")
            fail(f"protocol gate closed: {reason}. Nothing was read or sent.")
        self.log.info("protocol gate: %s", event.get("reason"))
