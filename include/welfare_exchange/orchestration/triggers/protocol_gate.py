"""Trigger that waits, in the triggerer, until a protocol's gate opens or closes for good."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook


class ProtocolGateTrigger(BaseTrigger):
    """Fires ``{"status": "open"}`` when the protocol is signed and valid on ``on``, or
    ``{"status": "closed", "reason": …}`` as soon as it is revoked, suspended or expired.

    :param protocol_id: the protocol to watch.
    :param on: the exchange date (ISO), the run's logical date — never the wall clock.
    :param requirements: channel / kind the exchange needs (passed to the gate check).
    :param poke_interval: seconds between two looks at the registry.
    """

    def __init__(self, protocol_id: int, on: str, requirements: dict[str, Any] | None = None, poke_interval: float = 30.0):
        super().__init__()
        self.protocol_id = protocol_id
        self.on = on
        self.requirements = requirements or {}
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"protocol_id": self.protocol_id, "on": self.on, "requirements": self.requirements,
             "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ProjectDbHook()
        on = dt.date.fromisoformat(self.on)
        while True:
            # The registry check is a short synchronous query: run it off the event loop.
            decision = await asyncio.to_thread(hook.gate_decision, self.protocol_id, on, **self.requirements)
            if decision.state != "wait":
                yield TriggerEvent({"status": decision.state, "reason": decision.reason})
                return
            self.log.info("protocol %s: %s; looking again in %ss", self.protocol_id, decision.reason, self.poke_interval)
            await asyncio.sleep(self.poke_interval)
