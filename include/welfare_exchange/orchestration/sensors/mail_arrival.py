"""Sensor that waits for a municipality's request e-mail in the agency's mailbox (IMAP)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from welfare_exchange.db.models import Exchange
from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook
from welfare_exchange.orchestration.tasks import fail
from welfare_exchange.orchestration.sensors.arrival_window import ArrivalWindow


class MailRequestArrivalSensor(ArrivalWindow, BaseSensorOperator):
    """Wait until a message from the protocol's sender is in the agency's INBOX; push the oldest to XCom.

    Only headers are read (From and size): nothing is downloaded and nothing changes
    in the mailbox. The message is tied to the protocol for good — certificate, signature,
    cipher — by ``fetch_request``, which opens it. Several messages: the oldest is this run's
    exchange, the others wait for the next runs. Pokes in ``reschedule`` mode by default;
    ``deferrable=True`` waits in the triggerer instead
    (:class:`~welfare_exchange.orchestration.triggers.mail_arrival.MailArrivalTrigger`).

    Idempotent: when this run already took a message (the task was cleared after the
    exchange started), it returns that same message at once.

    ``timeout`` is the arrival window: when it closes with no message, the audit records
    ``request.none_arrived`` and the run ends skipped (:class:`~welfare_exchange.orchestration.sensors.arrival_window.ArrivalWindow`).

    The XCom value names where the message is (UID, UIDVALIDITY, size): no address, no
    header, no content.

    :param protocol_id: the protocol the exchange runs under.
    :param sender_address: the protocol's registered sender (From) address.
    :param imap_conn_id: the agency mailbox's connection (type ``imap``).
    :param deferrable: wait in the triggerer instead of rescheduling.
    """

    template_fields = ("sender_address", "imap_conn_id")
    awaited_in = "the agency's mailbox (from the protocol's sender)"

    def __init__(
        self,
        *,
        protocol_id: int,
        sender_address: str,
        imap_conn_id: str = "imap_agency",
        deferrable: bool = False,
        **kwargs,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.protocol_id = protocol_id
        self.sender_address = sender_address
        self.imap_conn_id = imap_conn_id
        self.deferrable = deferrable

    def _look(self) -> dict[str, Any] | None:
        from welfare_exchange.channels import smime as channel

        return channel.first_waiting(self.sender_address, self.imap_conn_id)

    def poke(self, context) -> PokeReturnValue | bool:
        taken = self._already_taken(context["ti"].run_id)
        if taken is not None:
            self.log.info("this run already took a request message (exchange %s)", taken["exchange_id"])
            return PokeReturnValue(is_done=True, xcom_value=taken)
        found = self._look()
        if found is None:
            self.window_closed(context, self.reschedule_window(context))
            self.log.info("no request message from the protocol's sender in the agency's INBOX yet")
            return False
        self.log.info("a request message (%d bytes) is waiting", found["size"])
        return PokeReturnValue(is_done=True, xcom_value=found)

    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)  # the usual case — already there — needs no deferral
        if result:
            return result.xcom_value
        from welfare_exchange.orchestration.triggers.mail_arrival import MailArrivalTrigger

        self.defer(
            trigger=MailArrivalTrigger(self.sender_address, self.imap_conn_id, self.poke_interval),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") != "found":
            fail(f"waiting for a request message failed: {(event or {}).get('reason', 'no event')}")
        return event["message"]

    def _already_taken(self, run_id: str) -> dict | None:
        from welfare_exchange import ledger

        with ProjectDbHook().session() as session:
            exchange = (
                session.query(Exchange).filter_by(protocol_id=int(self.protocol_id), run_id=run_id).one_or_none()
            )
            if exchange is None:
                return None
            effect = ledger.find_side_effect(session, f"exchange:{exchange.id}:received")
            detail = dict(effect.detail or {}) if effect is not None else {}
            return {"uid": detail.get("uid"), "uidvalidity": detail.get("uidvalidity"), "size": exchange.request_size,
                    "exchange_id": exchange.id}
