"""The referral exchange's one door to the agreement's channel (SFTP or S/MIME e-mail).

Every file a referral sends (the list, the withdrawal notice, a feedback refusal report) and
every feedback file it takes goes through this module, so that re-pointing the referral at
another channel implementation touches this file only. What it offers:

* :func:`send_once` — deliver bytes under a ledger key, exactly once whatever re-runs, and run
  the caller's bookkeeping in the transaction that completes it (or, after a crash between the
  two, on the retry);
* :func:`waiting_feedback`, :func:`take_feedback`, :func:`quarantine_feedback` — the Sociaal
  Huis's ``inbox/``: a complete feedback file is moved to ``received/`` *before* it is read
  (so it is never taken twice), a refused one on to ``quarantine/``;
* :func:`remote_copy` — where a sent file lies on the channel, for its deletion deadline.

The folders are the Method 1 ones (``inbox/``, ``received/``, ``quarantine/``, ``outbox/``).
Feedback over S/MIME e-mail is not wired yet: a ``smime`` agreement sends its lists and
notices by e-mail, and its feedback is recorded with ``welfare-exchange referral`` by hand.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from welfare_exchange import ledger
from welfare_exchange.channels import registry as channels
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol
from welfare_exchange.channels.common import key_password as _key_password
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.intake import IntakeLimits
from welfare_exchange.transport import sftp

log = logging.getLogger(__name__)

INBOX, OUTBOX, RECEIVED, QUARANTINE = "inbox", "outbox", "received", "quarantine"
#: Feedback file names the agency takes from ``inbox/`` (case-insensitive); anything else stays there.
FEEDBACK_PATTERNS = ("terugkoppeling*.xlsx", "terugkoppeling*.xls", "feedback*.xlsx", "feedback*.xls")


def key_password(protocol: Protocol) -> str:
    """The file password the two DPOs agreed (the protocol's key connection)."""
    return _key_password(protocol)


def _hook(protocol: Protocol):
    return sftp.sftp_hook(protocol.channel_connection)


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


def waiting_feedback(protocol: Protocol, *, settle_seconds: float = 2.0) -> str | None:
    """The handle of the oldest complete feedback file in ``inbox/`` (never its name), or ``None``."""
    if protocol.channel != "sftp":
        return None
    ready = sftp.list_ready_requests(_hook(protocol), INBOX, FEEDBACK_PATTERNS, settle_seconds)
    return sftp.name_handle(ready[0].name) if ready else None


def take_feedback(protocol: Protocol, handle: str, *, key: str) -> tuple[bytes, str]:
    """Move the feedback file from ``inbox/`` to ``received/`` (once per ``key``) and read it.

    Returns ``(bytes, remote path)``. The file is read into memory only; its name is the Sociaal
    Huis's and is never recorded.
    """
    hook = _hook(protocol)
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        target = (effect.detail or {}).get("remote") if effect is not None and effect.state == "done" else None
    if target is None:
        name = sftp.find_by_handle(hook, INBOX, handle)
        if name is None and effect is not None:  # moved by an earlier try that stopped before recording it
            moved = sftp.find_by_handle(hook, RECEIVED, handle)
            if moved is not None:
                target = posixpath.join(RECEIVED, moved)
                with session_scope() as session:
                    ledger.complete_side_effect(session, key, detail={"remote": target})
    if target is None:
        if name is None:
            raise sftp.RemoteFileMissing(
                f"the feedback file the sensor found is no longer in {INBOX}/ on connection {protocol.channel_connection!r}: "
                "clear wait_for_feedback to take the next one"
            )
        with session_scope() as session:
            ledger.begin_side_effect(session, key, kind="referral_feedback_received", exchange_id=None)
        target = sftp.move(hook, posixpath.join(INBOX, name), RECEIVED)
        with session_scope() as session:
            ledger.complete_side_effect(session, key, detail={"remote": target})
    data, _, _ = sftp.fetch_bytes(hook, target, max_bytes=IntakeLimits.from_env().max_file_bytes)
    return data, target


def quarantine_feedback(protocol: Protocol, source: str, *, key: str) -> str:
    """Move a refused feedback file from ``received/`` to ``quarantine/`` (once per ``key``)."""
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        if effect is not None and effect.state == "done":
            return effect.detail["remote"]
        ledger.begin_side_effect(session, key, kind="referral_feedback_quarantined", exchange_id=None)
    try:
        target = sftp.move(_hook(protocol), source, QUARANTINE)
    except sftp.RemoteFileMissing:  # moved by an earlier try that stopped before recording it
        target = posixpath.join(QUARANTINE, posixpath.basename(source))
    with session_scope() as session:
        ledger.complete_side_effect(session, key, detail={"remote": target})
    return target


def location(protocol: Protocol, remote: str) -> str:
    """The deletion location of a remote path on the protocol's SFTP connection."""
    return f"{protocol.channel_connection}:{remote}"
