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
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol
from welfare_exchange.errors import ProtocolError
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
    run: RunInfo, on_done: Callable[[Session], Any] | None = None,
) -> dict[str, Any]:
    """Deliver ``data`` as ``name`` on the protocol's channel, once per ``key``.

    The ledger records the intent before and the delivery after. ``on_done(session)`` runs in
    the transaction that completes it — and again, harmlessly, on every later call (it must be
    idempotent), so a crash between the delivery and the bookkeeping heals on the retry.
    """
    if protocol.channel == "smime":
        from welfare_exchange.channels import smime as mail_channel

        sent = mail_channel.send_once(
            protocol, key=key, kind=kind, exchange_id=exchange_id, subject=subject, payload=data, filename=name,
            message_key=key, today=run.exchange_date, run=run,
        )
        if on_done is not None:
            with session_scope() as session:
                on_done(session)
        return {"name": name, "already_delivered": bool(sent.get("already_sent"))}
    if protocol.channel != "sftp":
        raise ProtocolError(f"protocol {protocol.id}: no referral delivery over channel {protocol.channel!r}")
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        done = effect is not None and effect.state == "done"
        if done:
            if on_done is not None:
                on_done(session)
        else:
            ledger.begin_side_effect(session, key, kind=kind, exchange_id=exchange_id, target=posixpath.join(OUTBOX, name))
    if done:
        log.info("%s was already delivered; nothing sent again", kind)
        return {"name": name, "sha256": effect.sha256, "already_delivered": True}
    # Idempotent on the server too: the same bytes already there are not uploaded again.
    digest, size = sftp.upload_bytes(_hook(protocol), data, OUTBOX, name)
    with session_scope() as session:
        ledger.complete_side_effect(session, key, sha256=digest, detail={"bytes": size})
        if on_done is not None:
            on_done(session)
    return {"name": name, "sha256": digest, "already_delivered": False}


def remote_copy(protocol: Protocol, name: str) -> tuple[str, str] | None:
    """``(where, location)`` of a file sent to the Sociaal Huis, for its deletion deadline;
    ``None`` when the channel keeps no copy the agency can delete (e-mail)."""
    if protocol.channel == "sftp":
        return "sftp", f"{protocol.channel_connection}:{posixpath.join(OUTBOX, name)}"
    return None


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
