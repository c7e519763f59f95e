"""The idempotent outbox: at most one message per family per campaign, whatever crashes.

Each family of a campaign has one :class:`~welfare_exchange.db.models.SideEffect` keyed
``campaign:<exchange_id>:family:<beneficiary_id>`` (kind ``outreach_message``), whatever the
channel. Its life:

1. **begun** — committed as ``pending`` *before* the message goes out;
2. **settled** — ``done`` *after*, with ``detail.outcome``: ``email`` (accepted by the SMTP
   server), ``letter`` (in a batch released to the mail room), ``bounced`` (refused for good)
   or ``uncertain``;
3. or, when the SMTP server certainly did not get it (connection refused, a 4xx before the
   data), back to ``pending`` with ``detail.not_sent`` — the only pending state that may be
   sent again.

**A crash between 1 and 2** leaves a ``pending`` row without ``not_sent``: the message may or
may not have been accepted. Asking the server is impossible (SMTP has no "did you get
Message-ID X?"), so the outbox chooses **at most once**: the next run settles such a row as
``uncertain``, audits it, counts it apart, and never sends it again by itself.

**An operator resolves** an uncertain message (:mod:`~welfare_exchange.outreach.resolution`)
after looking its Message-ID up in the SMTP server's log or queue: as *sent* (delivery
confirmed) or *resend* (once more, the very same message and Message-ID). The decision is a
second row, ``<key>:resolution`` (kind ``outreach_resolution``), with the same life as a
message: a resend is begun (``pending``) before it is handed over and settled after; a crash
in between makes it uncertain for good (it can then only be confirmed). A message is resent
at most once.

A letter has no such window: it is begun and settled in the same database transaction as its
batch's release.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import ledger
from welfare_exchange.db.models import SideEffect
from welfare_exchange.outreach.templates import message_key

KIND = "outreach_message"
EMAIL, LETTER, BOUNCED, UNCERTAIN = "email", "letter", "bounced", "uncertain"
OUTCOMES = (EMAIL, LETTER, BOUNCED, UNCERTAIN)

RESOLUTION_KIND = "outreach_resolution"
#: An uncertain message's resolution: not yet looked at, a resend the server did not take (it
#: may be tried again), a resend begun and never settled, a resend whose own fate is uncertain
#: (it can only be confirmed), and the three resolved ones.
OPEN, RESEND_NOT_SENT, RESEND_IN_FLIGHT, RESEND_UNCERTAIN = "open", "resend_not_sent", "resend_in_flight", "resend_uncertain"
CONFIRMED, RESENT, RESEND_BOUNCED = "confirmed", "resent", "resend_bounced"
UNRESOLVED = (OPEN, RESEND_NOT_SENT, RESEND_IN_FLIGHT, RESEND_UNCERTAIN)
#: Resolved statuses → their outcome count (:func:`outcome_counts`).
RESOLVED_COUNTS = {CONFIRMED: "resolved_sent", RESENT: "resolved_resent", RESEND_BOUNCED: "resolved_bounced"}


@dataclass(frozen=True)
class Entry:
    """One family's outbox row as the send loop needs it."""

    key: str
    state: str
    outcome: str | None
    not_sent: bool

    @property
    def settled(self) -> bool:
        return self.state == "done"

    @property
    def in_flight(self) -> bool:
        """Begun and never settled nor known unsent: the crash window."""
        return self.state == "pending" and not self.not_sent


def entries(session: Session, exchange_id: int) -> dict[str, Entry]:
    """Every outbox row of a campaign, by key (one query)."""
    rows = session.execute(
        sa.select(SideEffect.idempotency_key, SideEffect.state, SideEffect.detail).where(
            SideEffect.exchange_id == exchange_id, SideEffect.kind == KIND
        )
    )
    out = {}
    for key, state, detail in rows:
        detail = detail or {}
        out[key] = Entry(key, state, detail.get("outcome"), bool(detail.get("not_sent")))
    return out


def begin(session: Session, exchange_id: int, beneficiary_id: int, *, channel: str, message_id: str | None = None) -> str:
    """Record the intent to send (``pending``), clearing an earlier ``not_sent`` mark."""
    key = message_key(exchange_id, beneficiary_id)
    effect = ledger.begin_side_effect(session, key, kind=KIND, exchange_id=exchange_id, target=channel)
    if effect.state != "done":
        attempts = (effect.detail or {}).get("attempts", 0) + 1
        effect.detail = {"channel": channel, "message_id": message_id, "attempts": attempts}
        session.flush()
    return key


def settle(session: Session, key: str, outcome: str, *, code: int | None = None, sha256: str | None = None) -> SideEffect:
    """Mark a begun message ``done`` with its outcome (once; a second call changes nothing)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outbox outcome {outcome!r}")
    effect = ledger.find_side_effect(session, key)
    previous = dict(effect.detail or {}) if effect is not None else {}
    return ledger.complete_side_effect(session, key, sha256=sha256, detail={**previous, "outcome": outcome, "code": code})


def mark_not_sent(session: Session, key: str, reason: str, code: int | None = None) -> None:
    """The server certainly did not get the message: it may be sent again later."""
    effect = ledger.find_side_effect(session, key)
    if effect is not None and effect.state != "done":
        effect.detail = {**(effect.detail or {}), "not_sent": True, "reason": reason, "code": code}
        session.flush()


def bulk_settle_letters(session: Session, exchange_id: int, beneficiary_ids: Iterable[int], *, batch: str) -> list[int]:
    """Begin and settle the letters of one released batch in the caller's transaction.

    Returns the beneficiaries newly settled (those already in the outbox are left alone).
    """
    existing = entries(session, exchange_id)
    now = dt.datetime.now(dt.timezone.utc)
    new = [b for b in beneficiary_ids if message_key(exchange_id, b) not in existing]
    if new:
        session.execute(
            sa.insert(SideEffect),
            [
                {"idempotency_key": message_key(exchange_id, b), "kind": KIND, "exchange_id": exchange_id,
                 "state": "done", "target": LETTER, "detail": {"channel": LETTER, "outcome": LETTER, "batch": batch},
                 "created_at": now, "done_at": now}
                for b in new
            ],
        )
    return new


def resolution_key(key: str) -> str:
    """The key of the operator's resolution of the uncertain message ``key``."""
    return f"{key}:resolution"


def resolution_status(state: str | None, detail: dict[str, Any] | None) -> str:
    """An uncertain message's resolution from its resolution row (``None``: there is none)."""
    if state is None:
        return OPEN
    detail = detail or {}
    if state != "done":
        return RESEND_NOT_SENT if detail.get("not_sent") else RESEND_IN_FLIGHT
    if detail.get("decision") == "sent":
        return CONFIRMED
    return {EMAIL: RESENT, BOUNCED: RESEND_BOUNCED}.get(detail.get("outcome"), RESEND_UNCERTAIN)


def resolutions(session: Session, exchange_id: int) -> dict[str, str]:
    """The resolution status of every resolved-or-being-resolved message of a campaign, by message key."""
    rows = session.execute(
        sa.select(SideEffect.idempotency_key, SideEffect.state, SideEffect.detail).where(
            SideEffect.exchange_id == exchange_id, SideEffect.kind == RESOLUTION_KIND
        )
    )
    suffix = resolution_key("")
    return {key.removesuffix(suffix): resolution_status(state, detail) for key, state, detail in rows}


def outcome_counts(session: Session, exchange_id: int) -> dict[str, Any]:
    """How many families ended in each outcome, plus those still pending.

    ``uncertain`` counts the uncertain messages nobody has resolved yet; the resolved ones are
    counted apart: ``resolved_sent`` (delivery confirmed by an operator), ``resolved_resent``
    (sent once more and accepted), ``resolved_bounced`` (sent once more and refused).
    """
    counts = {outcome: 0 for outcome in OUTCOMES} | {"pending": 0} | dict.fromkeys(RESOLVED_COUNTS.values(), 0)
    resolved = resolutions(session, exchange_id)
    for entry in entries(session, exchange_id).values():
        if not entry.settled or entry.outcome not in OUTCOMES:
            counts["pending"] += 1
        elif entry.outcome == UNCERTAIN:
            counts[RESOLVED_COUNTS.get(resolved.get(entry.key, OPEN), UNCERTAIN)] += 1
        else:
            counts[entry.outcome] += 1
    return counts


class Throttle:
    """At most ``rate`` sends per second, evenly spaced (no bursts after a pause).

    :param rate: messages per second; ``0`` or less means unthrottled.
    """

    def __init__(self, rate: float, *, clock=time.monotonic, sleep=time.sleep) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = None

    def wait(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval
