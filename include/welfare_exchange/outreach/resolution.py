"""Resolve uncertain Method 2 messages: an operator looked, and decides once per message.

A message interrupted between handing it over and hearing the server's answer is settled
``uncertain`` and never sent again by the campaign (at most once, see
:mod:`~welfare_exchange.outreach.outbox`). That family may never get the offer. The operator
looks the message's Message-ID up in the SMTP server's log or queue and decides:

* ``sent`` — the server did take it: recorded, nothing is sent;
* ``resend`` — it did not (or the log is gone): the very same message, same bytes and same
  Message-ID (so a receiving server or mail client that did get the first one can drop the
  second), is sent once more through the outbox's own rules: begun before it is handed over,
  settled after. A resend the server did not take (down, 4xx) may be tried again; a resend
  whose own fate a crash hid is never sent again — it can only be confirmed.

Each decision and each resend is an audit fact naming the operator and the reason, about the
family (its keyed reference). Running a resolution again does nothing twice: a resolved message
is left alone. Concurrent operators are serialised on the message's outbox row. Nothing here
prints or raises a name, an e-mail or a postal address: messages are named by their outbox id
and Message-ID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, insz, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Protocol, SideEffect
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.outreach import outbox, selection, steps
from welfare_exchange.outreach.smtp import BOUNCED, NOT_SENT, SENT, SmtpSession
from welfare_exchange.outreach.templates import email_message

DECISIONS = ("sent", "resend")

#: Status → how the operator reads it.
STATUS_TEXT = {
    outbox.OPEN: "uncertain: check the SMTP log, then resolve",
    outbox.RESEND_NOT_SENT: "uncertain: a resend was not taken by the SMTP server; resolve again",
    outbox.RESEND_IN_FLIGHT: "uncertain: a resend was begun and never settled (interrupted, or running now)",
    outbox.RESEND_UNCERTAIN: "uncertain: sent once more, and that resend was interrupted too; can only be confirmed",
    outbox.CONFIRMED: "resolved: delivery confirmed by an operator",
    outbox.RESENT: "resolved: sent once more, accepted by the SMTP server",
    outbox.RESEND_BOUNCED: "resolved: sent once more, refused for good by the mail server",
}


@dataclass(frozen=True)
class UncertainMessage:
    """One message a campaign settled ``uncertain``, as the operator sees it: no personal data."""

    outbox_id: int
    key: str
    message_id: str | None
    began_at: dt.datetime
    status: str
    decided_by: str | None

    @property
    def resolved(self) -> bool:
        return self.status not in outbox.UNRESOLVED

    def as_dict(self) -> dict[str, object]:
        return {"outbox_id": self.outbox_id, "message_id": self.message_id, "began_at": self.began_at.isoformat(),
                "status": self.status, "resolved": self.resolved, "decided_by": self.decided_by}


@dataclass(frozen=True)
class Resolved:
    """What one resolution did to one message."""

    outbox_id: int
    message_id: str | None
    status: str
    note: str
    changed: bool
    #: the SMTP server could not be reached at all (the rest of a batch is left for the next run)
    unreachable: bool = False

    @property
    def not_taken(self) -> bool:
        """A resend the SMTP server did not take: run the resolution again later."""
        return self.status == outbox.RESEND_NOT_SENT


def uncertain_messages(session: Session, exchange_id: int) -> list[UncertainMessage]:
    """Every message of the campaign that was settled ``uncertain``, resolved or not, by outbox id."""
    rows = session.execute(
        sa.select(SideEffect.id, SideEffect.idempotency_key, SideEffect.detail, SideEffect.created_at)
        .where(SideEffect.exchange_id == exchange_id, SideEffect.kind == outbox.KIND, SideEffect.state == "done")
        .order_by(SideEffect.id)
    ).all()
    decisions = {
        key: (state, detail)
        for key, state, detail in session.execute(
            sa.select(SideEffect.idempotency_key, SideEffect.state, SideEffect.detail).where(
                SideEffect.exchange_id == exchange_id, SideEffect.kind == outbox.RESOLUTION_KIND
            )
        )
    }
    out = []
    for outbox_id, key, detail, began in rows:
        if (detail or {}).get("outcome") != outbox.UNCERTAIN:
            continue
        state, decision = decisions.get(outbox.resolution_key(key), (None, None))
        out.append(UncertainMessage(
            outbox_id, key, (detail or {}).get("message_id"), began, outbox.resolution_status(state, decision),
            (decision or {}).get("by"),
        ))
    return out


def _normalise_message_id(text: str) -> str:
    text = text.strip()
    return text if text.startswith("<") else f"<{text}>"


def _targets(messages: list[UncertainMessage], exchange_id: int, outbox_ids: Iterable[int],
             message_ids: Iterable[str], every: bool) -> list[UncertainMessage]:
    outbox_ids, message_ids = list(outbox_ids), [_normalise_message_id(m) for m in message_ids]
    if every == bool(outbox_ids or message_ids):
        raise InputError("name the messages to resolve (--outbox-id or --message-id), or give --all; not both")
    if every:
        return [m for m in messages if not m.resolved]
    by_id = {m.outbox_id: m for m in messages}
    by_message_id = {m.message_id: m for m in messages if m.message_id}
    unknown = [str(i) for i in outbox_ids if i not in by_id] + [m for m in message_ids if m not in by_message_id]
    if unknown:
        raise InputError(
            f"not an uncertain message of campaign {exchange_id}: {', '.join(unknown)} "
            f"(see `welfare-exchange outreach uncertain list {exchange_id}`)"
        )
    chosen = [by_id[i] for i in outbox_ids] + [by_message_id[m] for m in message_ids]
    return list({m.outbox_id: m for m in chosen}.values())


def _lock(session: Session, key: str) -> None:
    """Serialise resolutions of one message: a row lock on PostgreSQL, the write lock on SQLite."""
    session.execute(sa.update(SideEffect).where(SideEffect.idempotency_key == key).values(state=SideEffect.state))


def _current(session: Session, key: str) -> tuple[SideEffect | None, str]:
    effect = ledger.find_side_effect(session, outbox.resolution_key(key))
    status = outbox.resolution_status(effect.state if effect else None, effect.detail if effect else None)
    return effect, status


class _Resolver:
    """One resolution command: the campaign's texts, gate and family list, loaded once."""

    def __init__(self, exchange_id: int, actor: audit.Actor, reason: str, on: dt.date) -> None:
        self.exchange_id, self.actor, self.reason = exchange_id, actor, reason
        with session_scope() as session:
            exchange, protocol, offer = steps.load_campaign(session, exchange_id)
            self.protocol_id = protocol.id
            self.campaign = steps.campaign_texts(exchange, protocol, offer)
            self.gate = steps.offer_gate(protocol, offer, on)
        self._families: dict[int, selection.Family] | None = None

    def family(self, key: str, *, required: bool) -> selection.Family | None:
        """The family of an outbox key from the campaign's frozen list (``None`` once retention deleted it)."""
        if self._families is None:
            try:
                families = steps.staged_families(self.protocol_id, self.exchange_id)
            except FileNotFoundError:
                families = []
            self._families = {f.beneficiary_id: f for f in families}
        family = self._families.get(int(key.rsplit(":", 1)[1]))
        if family is None and required:
            raise InputError(
                f"campaign {self.exchange_id}: its family list is gone (deleted by retention): an uncertain message "
                "can no longer be sent again; resolve it as sent or leave it uncertain"
            )
        return family

    def record(self, session: Session, message: UncertainMessage, action: str, outcome: str, text: str,
               fact_key: str, *, sha256: str | None = None) -> None:
        family = self.family(message.key, required=False)
        audit.record(
            session, action, outcome, actor=self.actor, protocol=session.get(Protocol, self.protocol_id),
            exchange_id=self.exchange_id, data_categories=steps.MESSAGE_CATEGORIES,
            subject=family.insz if family else None, file_hashes={"message": sha256} if sha256 else None,
            message=f"{text} (outbox {message.outbox_id}, Message-ID {message.message_id}); by {self.actor.name}: "
            f"{self.reason}",
            fact_key=fact_key,
        )

    # ------------------------------------------------------------------ sent

    def confirm(self, message: UncertainMessage) -> Resolved:
        """The operator found the message accepted in the SMTP server's log or queue."""
        key = outbox.resolution_key(message.key)
        with session_scope() as session:
            _lock(session, message.key)
            effect, status = _current(session, message.key)
            if status not in outbox.UNRESOLVED:
                return Resolved(message.outbox_id, message.message_id, status, "already resolved; nothing done", False)
            if effect is None:
                effect = ledger.begin_side_effect(session, key, kind=outbox.RESOLUTION_KIND,
                                                  exchange_id=self.exchange_id, target="sent")
            effect.state, effect.target = "done", "sent"
            effect.detail = {**(effect.detail or {}), "decision": "sent", "by": self.actor.name}
            effect.done_at = dt.datetime.now(dt.timezone.utc)
            session.flush()
            self.record(session, message, "message.confirmed", "success",
                        "uncertain offer e-mail resolved as sent: the operator found it accepted in the SMTP "
                        "server's log or queue", f"{key}:confirmed")
        return Resolved(message.outbox_id, message.message_id, outbox.CONFIRMED, "confirmed as sent; nothing sent", True)

    # ------------------------------------------------------------------ resend

    def resend(self, message: UncertainMessage, smtp: SmtpSession, sender: str) -> Resolved:
        """Send the very same message once more, begun before and settled after (the outbox's rules)."""
        key = outbox.resolution_key(message.key)
        if message.resolved or message.status == outbox.RESEND_UNCERTAIN:
            return Resolved(message.outbox_id, message.message_id, message.status,
                            "already resolved, or already sent once more: nothing sent", False)
        family = self.family(message.key, required=True)
        message_id, data = email_message(self.campaign, beneficiary_id=family.beneficiary_id, recipient=family.email,
                                         sender=sender)
        if message.message_id and message_id != message.message_id:
            raise InputError(
                f"campaign {self.exchange_id}, outbox {message.outbox_id}: with the current sender address the "
                f"message would carry another Message-ID than {message.message_id}, so a receiver could not tell it "
                "is the same message; restore the campaign's sender (WELFARE_EXCHANGE_OUTREACH_SENDER) or resolve as sent"
            )
        with session_scope() as session:
            _lock(session, message.key)
            effect, status = _current(session, message.key)
            if status not in outbox.UNRESOLVED:
                return Resolved(message.outbox_id, message_id, status, "already resolved; nothing sent", False)
            if status == outbox.RESEND_UNCERTAIN:
                return Resolved(message.outbox_id, message_id, status, "already sent once more (that resend was "
                                "interrupted too): not sent a third time; check the SMTP log and resolve as sent", False)
            if status == outbox.RESEND_IN_FLIGHT:
                attempt = effect.detail.get("attempts", 1)
                self._settle(session, effect, message, outbox.UNCERTAIN, attempt)
                return Resolved(message.outbox_id, message_id, outbox.RESEND_UNCERTAIN, "an earlier resend was "
                                "interrupted: not sent again; check the SMTP log and resolve as sent", True)
            attempt = (effect.detail or {}).get("attempts", 0) + 1 if effect is not None else 1
            if effect is None:
                effect = ledger.begin_side_effect(session, key, kind=outbox.RESOLUTION_KIND,
                                                  exchange_id=self.exchange_id, target="resend")
            effect.target = "resend"
            effect.detail = {"decision": "resend", "attempts": attempt, "by": self.actor.name, "message_id": message_id}
            session.flush()
            self.record(session, message, "message.resend_requested", "success",
                        "uncertain offer e-mail to be sent once more, the same message and Message-ID",
                        f"{key}:resend:{attempt}:requested")
        result = smtp.send(data, sender=sender, recipient=family.email)
        with session_scope() as session:
            _lock(session, message.key)
            effect = ledger.find_side_effect(session, key)
            if result.outcome == NOT_SENT:
                effect.detail = {**effect.detail, "not_sent": True, "code": result.code}
                session.flush()
                self.record(session, message, "message.resend_not_sent", "failure",
                            f"resend not taken by the SMTP server ({result.reason}); it may be resolved again",
                            f"{key}:resend:{attempt}:not_sent")
                return Resolved(message.outbox_id, message_id, outbox.RESEND_NOT_SENT,
                                f"not sent: {result.reason}; run the resolution again when the server is back", True,
                                unreachable=result.code is None)
            outcome = {SENT: outbox.EMAIL, BOUNCED: outbox.BOUNCED}.get(result.outcome, outbox.UNCERTAIN)
            self._settle(session, effect, message, outcome, attempt, code=result.code,
                         sha256=hashlib.sha256(data).hexdigest() if outcome == outbox.EMAIL else None)
            status = outbox.resolution_status(effect.state, effect.detail)
        return Resolved(message.outbox_id, message_id, status, STATUS_TEXT[status], True)

    def _settle(self, session: Session, effect: SideEffect, message: UncertainMessage, outcome: str, attempt: int,
                *, code: int | None = None, sha256: str | None = None) -> None:
        action, result, text = {
            outbox.EMAIL: ("message.resent", "success", "offer e-mail sent once more; the SMTP server accepted it"),
            outbox.BOUNCED: ("message.resend_bounced", "failure",
                             f"offer e-mail sent once more, refused for good by the mail server (SMTP {code})"),
            outbox.UNCERTAIN: ("message.resend_uncertain", "unknown",
                               "offer e-mail sent once more, and that resend was interrupted too: it is not sent "
                               "again (confirm it from the SMTP log)"),
        }[outcome]
        if effect.state == "done" and (outcome == outbox.UNCERTAIN or effect.detail.get("outcome") != outbox.UNCERTAIN):
            return  # settled meanwhile by a resolution that knew as much or more
        effect.state, effect.sha256, effect.done_at = "done", sha256, dt.datetime.now(dt.timezone.utc)
        effect.detail = {**effect.detail, "outcome": outcome, "code": code, "not_sent": False}
        session.flush()
        self.record(session, message, action, result, text, f"{effect.idempotency_key}:resend:{attempt}:{outcome}",
                    sha256=sha256)


def resolve(
    exchange_id: int,
    decision: str,
    *,
    actor: audit.Actor,
    reason: str,
    outbox_ids: Iterable[int] = (),
    message_ids: Iterable[str] = (),
    every: bool = False,
    on: dt.date | None = None,
    settings: steps.OutreachSettings | None = None,
) -> list[Resolved]:
    """Resolve the named uncertain messages of a campaign (or ``every`` unresolved one) as ``decision``.

    :param decision: ``sent`` (the operator confirmed delivery in the SMTP server's log or
        queue) or ``resend`` (send the same message once more).
    :param reason: why, for the audit trail (what the operator found); never personal data.
    :param on: the day a resend is checked against the protocol gate and the offer's window
        (default today): a closed protocol or offer sends nothing.
    """
    if decision not in DECISIONS:
        raise InputError(f"resolve as one of {', '.join(DECISIONS)}, not {decision!r}")
    reason = (reason or "").strip()
    if not reason:
        raise InputError("a resolution needs a reason (--reason): what the SMTP server's log or queue showed")
    if insz.find_insz_shaped(reason):
        raise InputError("the reason may not contain an INSZ number: refer to the message by its outbox id")
    with session_scope() as session:
        protocol = steps.load_campaign(session, exchange_id)[1]
        if protocol.kind != "method2":
            raise InputError(f"exchange {exchange_id} is not a Method 2 campaign")
        targets = _targets(uncertain_messages(session, exchange_id), exchange_id, outbox_ids, message_ids, every)
    if not targets:
        return []
    resolver = _Resolver(exchange_id, actor, reason, on or dt.date.today())
    if decision == "sent":
        return [resolver.confirm(m) for m in targets]
    is_open, why = resolver.gate
    if not is_open and any(m.status in (outbox.OPEN, outbox.RESEND_NOT_SENT) for m in targets):
        raise ProtocolError(f"campaign {exchange_id}: nothing sent again: {why}")
    settings = settings or steps.OutreachSettings.from_env()
    sender = settings.sender_address()
    throttle = outbox.Throttle(settings.rate_per_second)
    done: list[Resolved] = []
    with SmtpSession(settings.smtp_conn_id) as smtp:
        for message in targets:
            throttle.wait()
            outcome = resolver.resend(message, smtp, sender)
            done.append(outcome)
            if outcome.unreachable:
                break  # the server is unreachable: the rest stays as it is, for the next run
    return done
