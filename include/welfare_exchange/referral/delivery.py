"""The referral exchange's one door to the agreement's channel (SFTP or S/MIME e-mail).

Every file a referral sends (the list, the withdrawal notice, a feedback refusal report) and
every feedback file it takes goes through this module, so that re-pointing the referral at
another channel implementation touches this file only. What it offers:

* :func:`send_once` — deliver bytes under a ledger key, exactly once whatever re-runs, and run
  the caller's bookkeeping in the transaction that completes it (or, after a crash between the
  two, on the retry);
* :func:`waiting_feedback`, :func:`take`, :func:`quarantine_feedback` — feedback in, through
  the channel (:meth:`~welfare_exchange.channels.base.Channel.find_inbound` and ``take_inbound``):
  a complete feedback file is moved out of the arrivals (SFTP ``inbox/`` → ``received/``, the
  agency's ``INBOX`` → ``Processed``) *before* it is read, so it is never taken twice; a refused
  one goes on to ``quarantine/`` / ``Rejected``;
* :func:`remote_copy` — where a sent file lies on the channel, for its deletion deadline.

The folders are the Method 1 ones. Over S/MIME e-mail, feedback is a message from the
agreement's registered sender, opened and checked exactly like a Method 1 request by mail.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from welfare_exchange.channels import registry as channels
from welfare_exchange.channels.base import Inbound
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol
from welfare_exchange.channels.common import key_password as _key_password
from welfare_exchange.runinfo import RunInfo

log = logging.getLogger(__name__)

#: Feedback file names the agency takes (case-insensitive): from SFTP ``inbox/`` (anything else stays
#: there), or as the one attachment of an e-mail (anything else is refused).
FEEDBACK_PATTERNS = ("terugkoppeling*.xlsx", "terugkoppeling*.xls", "feedback*.xlsx", "feedback*.xls")


def key_password(protocol: Protocol) -> str:
    """The file password the two DPOs agreed (the protocol's key connection)."""
    return _key_password(protocol)



def send_once(
    protocol: Protocol, data: bytes, name: str, *, key: str, kind: str, exchange_id: int | None, subject: str,
    run: RunInfo, on_done: Callable[[Session], Any] | None = None, sensitive: bool = True,
) -> dict[str, Any]:
    """Deliver ``data`` as ``name`` on the protocol's channel, once per ``key``.

    The channel (:meth:`welfare_exchange.channels.base.Channel.send_file`) records the intent
    before and the delivery after. ``on_done(session)`` then runs — on every call, so it must be
    idempotent: a crash between the delivery and the bookkeeping heals on the retry.
    """
    sent = channels.channel_for(protocol).send_file(
        protocol, key=key, kind=kind, exchange_id=exchange_id, name=name, payload=data, subject=subject,
        content_type="application/octet-stream", actor=run.actor, attempt=f"{run.run_id}:{run.try_number}",
        today=run.exchange_date, sensitive=sensitive, reference=key,
    )
    if on_done is not None:
        with session_scope() as session:
            on_done(session)
    if sent.already_sent:
        log.info("%s was already delivered; nothing sent again", kind)
    return {"name": name, "sha256": sent.sha256, "already_delivered": sent.already_sent, "location": sent.location}


def remote_copy(protocol: Protocol, name: str) -> tuple[str, str] | None:
    """``(where, location)`` of a file sent to the Sociaal Huis, for its deletion deadline;
    ``None`` when the channel keeps no copy the agency can delete (e-mail)."""
    channel = channels.channel_for(protocol)
    location = channel.sent_location(protocol, name)
    return None if location is None else (channel.places[0], location)


# ----------------------------------------------------------------------------- feedback in


def waiting_feedback(protocol: Protocol, *, settle_seconds: float = 2.0) -> Any | None:
    """The handle of the oldest complete feedback file on the agreement's channel (never its name), or ``None``."""
    return channels.channel_for(protocol).find_inbound(protocol, FEEDBACK_PATTERNS, settle_seconds=settle_seconds)


def take(protocol: Protocol, handle: Any, *, key: str, run: RunInfo | None = None) -> Inbound:
    """Take the feedback file ``handle`` names off the channel (once per ``key``) and return it
    (:meth:`welfare_exchange.channels.base.Channel.take_inbound`)."""
    run = run or RunInfo(exchange_date=dt.date.today())
    return channels.channel_for(protocol).take_inbound(protocol, handle, FEEDBACK_PATTERNS, key=key, run=run)


def take_feedback(protocol: Protocol, handle: Any, *, key: str) -> tuple[bytes, str]:
    """:func:`take`, as ``(bytes, where the channel keeps it)`` (e.g. the path in ``received/``)."""
    taken = take(protocol, handle, key=key)
    return taken.data, taken.ref


def quarantine_feedback(protocol: Protocol, taken: Inbound, *, key: str) -> Inbound:
    """Set a refused feedback file aside on the channel (``quarantine/``, ``Rejected``), once per ``key``."""
    return channels.channel_for(protocol).quarantine_inbound(protocol, taken, key=key)
