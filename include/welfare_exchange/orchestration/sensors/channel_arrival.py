"""Sensor that waits for a request on any channel, by asking the channel (:meth:`Channel.find_request`)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from welfare_exchange import audit
from welfare_exchange.channels.registry import channel_for
from welfare_exchange.db.models import Exchange
from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook
from welfare_exchange.orchestration.sensors.arrival_window import ArrivalWindow


class ChannelArrivalSensor(ArrivalWindow, BaseSensorOperator):
    """``wait_for_request`` of a channel without a sensor of its own (:attr:`Channel.sensor` ``"generic"``).

    Each poke is one plain look of the channel; the oldest complete request's handle goes to
    XCom (never a name). ``timeout`` is the arrival window (:class:`ArrivalWindow`): no request
    in it ends the run skipped, audited. Pokes in ``reschedule`` mode. Idempotent: when this run
    already took a request (the task was cleared after the exchange started), it returns at once.

    :param protocol_id: the protocol the exchange runs under.
    :param channel: the protocol's channel name.
    """

    template_fields = ("channel",)

    def __init__(self, *, protocol_id: int, channel: str, **kwargs) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.protocol_id = protocol_id
        self.channel = channel
        self.awaited_in = f"channel {channel}"

    def poke(self, context) -> PokeReturnValue | bool:
        from welfare_exchange.runinfo import exchange_date

        with ProjectDbHook().session() as session:
            taken = session.query(Exchange).filter_by(protocol_id=int(self.protocol_id),
                                                      run_id=context["ti"].run_id).one_or_none()
            taken_id = taken.id if taken is not None else None
        if taken_id is not None:
            self.log.info("this run already took its request (exchange %s)", taken_id)
            return PokeReturnValue(is_done=True, xcom_value={"exchange_id": taken_id})
        found: dict[str, Any] | None = channel_for(self.channel).find_request(
            int(self.protocol_id), actor=audit.Actor.from_context(context), on=exchange_date(context)
        )
        if found is None:
            self.window_closed(context, self.reschedule_window(context))
            self.log.info("no request on channel %s yet", self.channel)
            return False
        return PokeReturnValue(is_done=True, xcom_value=found)
