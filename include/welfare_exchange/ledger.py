"""The exchange ledger: what happened to each exchange, and which side effects are already done.

Tasks ask the ledger before they act. A side effect (a delivery, a message, a deletion) has an
idempotency key; it is recorded as ``pending`` before the act and ``done`` after it, so a task
that crashed in between knows, on its retry, to check the far side instead of acting again.

An exchange's state changes only through :func:`update_exchange`, which applies the table of
:mod:`welfare_exchange.exchange_state`: forward only, a re-run's earlier state is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import Exchange, Protocol, RetentionItem, SideEffect
from welfare_exchange.errors import InputError
from welfare_exchange.exchange_state import EXCHANGE_STATES, ExchangeStateError, move  # noqa: F401 (re-exported)

_log = logging.getLogger(__name__)


def get_exchange(session: Session, exchange_id: int) -> Exchange:
    exchange = session.get(Exchange, exchange_id)
    if exchange is None:
        raise InputError(f"no exchange with id {exchange_id} in the ledger")
    return exchange


def exchange_of_run(session: Session, dag_id: str, run_id: str, protocol_id: int | None = None) -> Exchange | None:
    """The exchange a DAG run carries; ``None`` when it has none yet, or several and ``protocol_id``
    does not single one out (a structural-feed run carries one per municipality)."""
    query = sa.select(Exchange).where(Exchange.dag_id == dag_id, Exchange.run_id == run_id)
    if protocol_id is not None:
        query = query.where(Exchange.protocol_id == protocol_id)
    found = list(session.scalars(query.order_by(Exchange.id).limit(2)))
    return found[0] if len(found) == 1 else None


def open_exchange(
    session: Session,
    protocol: Protocol,
    *,
    request_sha256: str,
    request_name: str | None,
    request_size: int | None,
    dag_id: str | None,
    run_id: str | None,
    exchange_date: dt.date,
) -> tuple[Exchange, bool]:
    """The exchange for this request file: ``(exchange, is_new)``.

    Keyed on (protocol, request SHA-256): the same file arriving again is the same exchange.
    ``is_new`` is False when it was already recorded — by an earlier run (a duplicate request)
    or by an earlier try of this same run (a retry, which carries on where it stopped).
    """
    existing = session.scalar(
        sa.select(Exchange).where(Exchange.protocol_id == protocol.id, Exchange.request_sha256 == request_sha256)
    )
    if existing is not None:
        return existing, False
    exchange = Exchange(
        protocol_id=protocol.id,
        request_sha256=request_sha256,
        request_name=request_name,
        request_size=request_size,
        dag_id=dag_id,
        run_id=run_id,
        exchange_date=exchange_date,
        state="received",
        progress="received",
    )
    session.add(exchange)
    session.flush()
    return exchange, True


def update_exchange(session: Session, exchange: Exchange, *, state: str | None = None, **fields: Any) -> Exchange:
    """Move an exchange towards ``state`` and set other columns (counts merged, not replaced).

    The move follows :func:`welfare_exchange.exchange_state.move`: a state the exchange already
    passed leaves it where it is; an exchange leaving ``failed`` loses its stale failure code.

    :raises ExchangeStateError: the move is illegal, or the delivered result's hash would change
        (before any column is changed).
    """
    if exchange.state == "delivered" and fields.get("result_sha256", exchange.result_sha256) != exchange.result_sha256:
        raise ExchangeStateError(
            f"exchange {exchange.id} was delivered: the hash of its delivered result cannot change. Nothing was changed."
        )
    if state is not None:
        step = move(exchange.state, state, exchange.progress, exchange_id=exchange.id)
        exchange.state, exchange.progress = step.state, step.progress
        if step.recovers:
            exchange.failure_code = None
    counts = fields.pop("counts", None)
    if counts:
        exchange.counts = {**(exchange.counts or {}), **counts}
    for name, value in fields.items():
        setattr(exchange, name, value)
    session.flush()
    return exchange


def require_move(exchange: Exchange, state: str) -> None:
    """Raise :class:`ExchangeStateError` unless ``exchange`` may move to ``state`` — before acting on it."""
    move(exchange.state, state, exchange.progress, exchange_id=exchange.id)


def withdraw_result(session: Session, exchange: Exchange) -> Exchange:
    """The one step back: a result built but not delivered is withdrawn (an erasure request).

    The exchange returns to ``matched`` (its result must be built again); a delivered result
    cannot be withdrawn — the municipality holds it.

    :raises ExchangeStateError: the result was delivered.
    """
    if exchange.state == "delivered":
        raise ExchangeStateError(
            f"exchange {exchange.id}: its result was delivered and cannot be withdrawn; the municipality "
            "handles the request for its copy"
        )
    if exchange.state == "built":
        exchange.state = "matched"
    if exchange.progress == "built":
        exchange.progress = "matched"
    exchange.result_sha256 = None
    session.flush()
    return exchange


def find_side_effect(session: Session, idempotency_key: str) -> SideEffect | None:
    return session.scalar(sa.select(SideEffect).where(SideEffect.idempotency_key == idempotency_key))


def is_done(session: Session, idempotency_key: str) -> bool:
    """True when the side effect with this key was completed."""
    effect = find_side_effect(session, idempotency_key)
    return effect is not None and effect.state == "done"


def begin_side_effect(
    session: Session, idempotency_key: str, *, kind: str, exchange_id: int | None, target: str | None = None
) -> SideEffect:
    """Record the intent to act (``pending``); returns the existing row when there is one."""
    effect = find_side_effect(session, idempotency_key)
    if effect is None:
        effect = SideEffect(idempotency_key=idempotency_key, kind=kind, exchange_id=exchange_id, target=target)
        session.add(effect)
        session.flush()
    return effect


def complete_side_effect(
    session: Session, idempotency_key: str, *, sha256: str | None = None, detail: dict[str, Any] | None = None
) -> SideEffect:
    """Mark the side effect ``done`` (it must have been begun)."""
    effect = find_side_effect(session, idempotency_key)
    if effect is None:
        raise RuntimeError(f"side effect {idempotency_key} was never begun")
    if effect.state != "done":
        effect.state = "done"
        effect.sha256 = sha256
        effect.detail = detail
        effect.done_at = dt.datetime.now(dt.timezone.utc)
        session.flush()
    return effect


@dataclass
class Effect:
    """One side effect as :func:`side_effect` hands it to the code that acts.

    ``pending``: act now (nothing recorded it done). ``was_done``: an earlier call did it; its
    ``sha256``/``detail``/``target`` are the recorded ones. ``interrupted``: an earlier try
    recorded the intent and stopped before recording the outcome (check the far side; its
    ``detail`` is what that try noted). ``recorded``: False when a ``tolerant`` effect could not
    reach the ledger (the act goes ahead unrecorded).
    """

    key: str
    pending: bool
    was_done: bool = False
    interrupted: bool = False
    sha256: str | None = None
    detail: dict[str, Any] | None = None
    target: str | None = None
    done_at: dt.datetime | None = None
    recorded: bool = True
    tolerant: bool = field(default=False, repr=False)
    _completed: bool = field(default=False, repr=False)
    _acted: bool = field(default=False, repr=False)
    _kept_pending: bool = field(default=False, repr=False)
    _begin: dict[str, Any] | None = field(default=None, repr=False)

    def complete(self, *, sha256: str | None = None, detail: dict[str, Any] | None = None, session: Session | None = None) -> None:
        """Record the act done (in ``session`` when given, so it commits with what the caller records beside it)."""
        from welfare_exchange.db import session_scope

        if not self.pending or self._completed:
            return
        self._acted = True  # the act happened: an error from here on never forgets the intent
        if not self.recorded:
            self._completed = True
            return
        try:
            with contextlib.nullcontext(session) if session is not None else session_scope() as s:
                if self._begin is not None:  # same_transaction: the intent is recorded with its outcome
                    begin_side_effect(s, self.key, **self._begin)
                done = complete_side_effect(s, self.key, sha256=sha256, detail=detail)
                self.sha256, self.detail, self.done_at = done.sha256, done.detail, done.done_at
        except Exception as err:
            if not self.tolerant:
                raise
            _log.warning("side effect %s: could not record it done (%s)", self.key.split(":", 1)[0], type(err).__name__)
        self._completed = True

    def keep_pending(self) -> None:
        """The body did not act after all (nothing was sent): leave the intent ``pending``, not done."""
        self._kept_pending = True


@contextlib.contextmanager
def side_effect(
    key: str, *, kind: str, exchange_id: int | None = None, target: str | None = None, forget_on_error: bool = False,
    tolerant: bool = False, same_transaction: bool = False,
) -> Iterator[Effect]:
    """Begin → act → complete, once per ``key``, with the ledger's semantics.

    ::

        with ledger.side_effect(key, kind="delivered", exchange_id=7, target=path) as effect:
            if effect.pending:
                digest, size = upload(...)
                effect.complete(sha256=digest, detail={"bytes": size})

    An effect already ``done`` is yielded with ``pending=False`` and its recorded outcome: the
    body acts on nothing. Otherwise the intent is committed (``pending``) before the body runs;
    the body acts and calls :meth:`Effect.complete` — with ``session=`` to commit the outcome in
    the same transaction as the facts recorded beside it — or :meth:`Effect.keep_pending` when it
    did not act; an effect neither completed nor kept pending is completed, empty, when the body
    ends without error. An exception leaves the intent ``pending`` — the next try finds it
    ``interrupted`` and checks the far side — unless ``forget_on_error`` (the far side surely
    refused, as an SMTP server that did not accept the message) and the body had not begun to
    record its outcome: then the intent is removed so the retry acts. ``tolerant``: a ledger that
    cannot be reached (on begin or on completion) is logged, not raised — the act goes ahead
    without the once-only check (a failure alert must go out even when the database is down).
    ``same_transaction``: no intent is committed before the act; begin and complete are recorded
    together, in one transaction, when the body completes it (an act safe to repeat after a
    crash, as rewriting a staged file: nothing to check on the far side).

    Begin and complete are still called directly where this shape does not fit (kept so by
    ``tests/test_one_rule.py``):

    * ``retention/runner.py`` ``_begin``/``_certify``/``_report_missing``: the intent is begun only
      for an item still pending in the transaction that re-reads it, and completed inside the
      certificate's transaction — or runs later (a missing copy stays pending for days).
    * ``outreach/outbox.py`` ``begin``/``settle``: the outbox is itself a begin/settle ledger per
      offer e-mail, many per SMTP session and per transaction, with an outcome (refused,
      uncertain) and an attempts count the context cannot express.
    * ``channels/sftp.py`` ``_record_delivery``: completes the delivery in the transaction that
      moves the exchange to ``delivered``; shared with ``confirm_delivery``, which completes a
      delivery an earlier try left pending and must not begin one.
    * ``channels/smime.py`` ``fetch_request``: the intent is begun, with the message's identity
      noted, in the transaction that opens the exchange (being reworked on another branch).
    * ``channels/sftp.py`` ``take_inbound``/``quarantine_inbound`` and ``channels/smime.py``
      ``take_inbound``: the referral feedback's inbound path, just merged from another branch and
      not yet converted (a file found by name after a crash, recorded in the lookup's transaction).
    * ``outreach/resolution.py`` ``confirm``/``resend``: operator decisions under a row lock in the
      caller's transaction; ``confirm`` records ``done`` with no act of ours.
    """
    from welfare_exchange.db import session_scope

    try:
        with session_scope() as session:
            found = find_side_effect(session, key)
            if found is not None and found.state == "done":
                effect = Effect(key, pending=False, was_done=True, sha256=found.sha256, detail=found.detail,
                                target=found.target, done_at=found.done_at, tolerant=tolerant)
            else:
                effect = Effect(key, pending=True, interrupted=found is not None, target=found.target if found else target,
                                detail=dict(found.detail) if found is not None and found.detail else None, tolerant=tolerant)
                if same_transaction:
                    effect._begin = {"kind": kind, "exchange_id": exchange_id, "target": target}
                else:
                    begin_side_effect(session, key, kind=kind, exchange_id=exchange_id, target=target)
    except Exception as err:
        if not tolerant:
            raise
        _log.warning("side effect %s: the ledger is unreachable (%s); acting without the once-only check",
                     key.split(":", 1)[0], type(err).__name__)
        effect = Effect(key, pending=True, target=target, recorded=False, tolerant=True)
    try:
        yield effect
    except BaseException:
        if effect.pending and effect.recorded and not effect._acted and forget_on_error:
            with session_scope() as session:
                session.execute(sa.delete(SideEffect).where(SideEffect.idempotency_key == key, SideEffect.state == "pending"))
        raise
    if effect.pending and not effect._completed and not effect._kept_pending:
        effect.complete()


def _of_exchange(exchange_id: int | None):
    """The retention items of this exchange (of none, for copies outside any exchange)."""
    return RetentionItem.exchange_id.is_(None) if exchange_id is None else RetentionItem.exchange_id == exchange_id


def request_deadline(
    protocol: Protocol, received_on: dt.date, *, what: str = "request", after: str | None = "receipt"
) -> tuple[dt.date, str]:
    """When what a municipality sent (``what``: request, feedback file, inbox notice, …) must be
    gone, and the rule that says so: the protocol's ``request_retention_days`` after the day it
    was received (the exchange date; ``after`` names it in the rule, ``None`` leaves it out)."""
    days = protocol.request_retention_days
    since = f" after {after}" if after else ""
    return received_on + dt.timedelta(days=days), f"{what}: {days} days{since} (protocol {protocol.id})"


def result_deadline(
    protocol: Protocol, on: dt.date, *, what: str = "result", after: str = "the exchange"
) -> tuple[dt.date, str]:
    """When what the agency sent (``what``: result, report, feed, …) must be gone, and the rule:
    the protocol's ``result_retention_days`` after ``on`` (the day named by ``after``)."""
    days = protocol.result_retention_days
    return on + dt.timedelta(days=days), f"{what}: {days} days after {after} (protocol {protocol.id})"


def schedule_deletion(
    session: Session,
    *,
    protocol_id: int,
    exchange_id: int | None,
    kind: str,
    where: str,
    location: str,
    deadline: dt.date,
    rule: str,
    sha256: str | None = None,
    size: int | None = None,
    uidvalidity: int | None = None,
    uid: int | None = None,
) -> RetentionItem:
    """Record (idempotently) that ``location`` must be deleted on ``deadline`` under ``rule``.

    Keyed on the copy: (kind, location, exchange). A re-run finds its item, deleted or not, and
    never records a deleted copy again; another exchange's copy at the same location (a file
    name reused next month) is a new item.

    ``sha256`` (and ``size``) identify the copy: the retention run deletes only a copy whose
    content matches. ``uidvalidity``/``uid`` say where a mailbox copy was put (a hint).
    """
    item = session.scalar(
        sa.select(RetentionItem).where(
            RetentionItem.kind == kind,
            RetentionItem.location == location,
            _of_exchange(exchange_id),
        )
    )
    if item is None:
        item = RetentionItem(
            protocol_id=protocol_id,
            exchange_id=exchange_id,
            kind=kind,
            where=where,
            location=location,
            deadline=deadline,
            rule=rule,
            sha256=sha256,
            size=size,
            uidvalidity=uidvalidity,
            uid=uid,
        )
        session.add(item)
    elif item.deleted_at is None:
        item.deadline, item.rule = deadline, rule
        item.sha256 = sha256 or item.sha256
        item.size = size if size is not None else item.size
        if uid is not None:
            item.uidvalidity, item.uid = uidvalidity, uid
    session.flush()
    return item


def move_copy(
    session: Session, kind: str, location: str, /, *, exchange_id: int | None, **moved: Any
) -> RetentionItem | None:
    """An exchange's copy recorded at ``location`` was moved: its pending retention item follows it.

    ``moved`` sets the item's new ``kind``, ``location``, ``uidvalidity``, ``uid``, ``deadline``
    or ``rule``. ``None`` when this exchange has no pending item at ``location`` (already moved
    by an earlier try). Another exchange's item at the same location is never touched.
    """
    item = session.scalar(
        sa.select(RetentionItem).where(
            RetentionItem.kind == kind, RetentionItem.location == location,
            _of_exchange(exchange_id), RetentionItem.deleted_at.is_(None),
        )
    )
    if item is None:
        return None
    for name, value in moved.items():
        setattr(item, name, value)
    session.flush()
    return item
