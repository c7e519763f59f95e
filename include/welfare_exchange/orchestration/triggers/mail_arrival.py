"""Trigger that waits, in the triggerer, until a request e-mail from one sender is in the agency's INBOX."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class MailArrivalTrigger(BaseTrigger):
    """Fires ``{"status": "found", "message": {...}}`` when a message from ``sender_address`` waits.

    Reads headers only, like the sensor; a mail server that cannot be reached fires
    ``{"status": "error", "reason": …}`` after three failed looks in a row, so the task fails
    (and retries) instead of waiting blind.

    :param sender_address: the protocol's registered sender.
    :param imap_conn_id: the agency mailbox's connection.
    :param poke_interval: seconds between two looks.
    """

    def __init__(self, sender_address: str, imap_conn_id: str = "imap_agency", poke_interval: float = 60.0):
        super().__init__()
        self.sender_address = sender_address
        self.imap_conn_id = imap_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"sender_address": self.sender_address, "imap_conn_id": self.imap_conn_id, "poke_interval": self.poke_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from welfare_exchange.channels import smime as channel

        failures = 0
        while True:
            try:
                # imaplib is blocking: look in a thread, off the triggerer's event loop.
                found = await asyncio.to_thread(channel.first_waiting, self.sender_address, self.imap_conn_id)
                failures = 0
            except Exception as exc:  # the mail server's errors are many and unrelated
                failures += 1
                self.log.warning("looking in the agency's mailbox failed (%s), %d time(s) in a row", type(exc).__name__, failures)
                if failures >= 3:
                    yield TriggerEvent({"status": "error", "reason": f"the IMAP server could not be read ({type(exc).__name__})"})
                    return
                found = None
            if found is not None:
                yield TriggerEvent({"status": "found", "message": found})
                return
            await asyncio.sleep(self.poke_interval)
