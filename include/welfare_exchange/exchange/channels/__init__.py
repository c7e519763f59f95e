"""The channel-specific ends of a Method 1 exchange: how a request arrives, how a refused one is
quarantined, how the result leaves, and what must later be deleted on the channel.

One module per channel a protocol can name (``Protocol.channel``):

* :mod:`.sftp` — the municipality's chrooted SFTP folders (``inbox/``, ``received/``,
  ``quarantine/``, ``outbox/``);
* :mod:`.smime` — the agency's mailbox over IMAP, results over SMTP, S/MIME both ways.

Every module offers the same functions — ``fetch_request(protocol_id, item, run)``,
``quarantine(exchange_id, err, run)``, ``deliver(exchange_id, run)``,
``confirm_delivery(exchange_id, run)`` (asked before the gate: was it delivered, the far side
checked for a delivery begun but not recorded), ``schedule_retention(session, protocol,
exchange)`` and ``REFUSAL_HINT`` — so the steps in
:mod:`welfare_exchange.exchange.steps` stay the same for both.
"""

from __future__ import annotations

from types import ModuleType

CHANNELS = ("sftp", "smime")


def for_channel(channel: str) -> ModuleType:
    """The module that implements ``channel``; a clear error for one no code exists for."""
    if channel == "sftp":
        from welfare_exchange.exchange.channels import sftp

        return sftp
    if channel == "smime":
        from welfare_exchange.exchange.channels import smime

        return smime
    raise ValueError(f"no exchange channel {channel!r}; known channels: {', '.join(CHANNELS)}")
