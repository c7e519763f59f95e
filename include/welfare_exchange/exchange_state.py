"""The states of an exchange and the one table that says how it may move between them.

Method 1 exchanges, Method 2 campaigns and structural feeds share these states (one
``exchange`` table). An exchange goes forward along one path, or leaves it for a side state::

    received ─→ validated ─→ matched ─→ built ─→ delivered      (forward; skipping ahead is allowed)
       │            │           │         │
       │            └──→ quarantined      │                      (final: the file was refused)
       ├──→ duplicate                     │                      (final: these bytes were processed before)
       └────────────┴───────────┴─────────┴──→ failed            (stopped before delivery; may recover)

| from \\ to          | a forward state S                          | quarantined            | duplicate    | failed    |
|---------------------|--------------------------------------------|------------------------|--------------|-----------|
| forward F (not del.)| S after F: moves; S same or before F: no-op | F ≤ validated          | F = received | moves     |
| delivered           | no-op                                      | illegal                | illegal      | illegal   |
| quarantined         | illegal                                    | no-op                  | illegal      | illegal   |
| duplicate           | illegal                                    | illegal                | no-op        | illegal   |
| failed (reached P)  | recovers to the later of S and P           | P ≤ validated          | illegal      | no-op     |

Why this shape: tasks are cleared and re-run in any order, so a step that reports a state the
exchange already passed is a re-run, not news — a no-op, never a step back. A ``failed``
exchange (its gate closed before delivery) keeps in ``progress`` the furthest forward state it
had reached; when a re-run succeeds (the protocol was resumed), it resumes there — not lower —
and its failure code is cleared. A delivered exchange cannot fail afterwards: steps ask the
ledger whether the delivery happened before they ask the gate. An illegal move raises
:class:`ExchangeStateError` naming the exchange and what to do.

The one deliberate step back is :func:`welfare_exchange.ledger.withdraw_result` (an erasure
request withdraws a result built but not delivered); it is not a move of this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from welfare_exchange.errors import InputError

#: The forward path, in order.
FORWARD = ("received", "validated", "matched", "built", "delivered")
#: Side states an exchange never leaves.
FINAL = ("duplicate", "quarantined")
FAILED = "failed"
#: Every state an exchange can be in.
EXCHANGE_STATES = ("received", "duplicate", "validated", "quarantined", "matched", "built", "delivered", "failed")
#: The furthest forward state from which a request may still be refused (quarantined) or be a duplicate.
_LAST_BEFORE = {"quarantined": "validated", "duplicate": "received"}


class ExchangeStateError(InputError):
    """A move the exchange state table does not allow: what was asked contradicts the ledger.

    An :class:`InputError`, so a task fails at once (no retry makes the ledger agree).
    """

    code = "illegal_exchange_state"


@dataclass(frozen=True)
class Move:
    """The outcome of asking for a state: what to store.

    :param state: the exchange's state after the move (unchanged for a no-op).
    :param progress: the furthest forward state reached.
    :param recovers: the exchange leaves ``failed``: its failure code no longer holds.
    """

    state: str
    progress: str
    recovers: bool = False


def rank(state: str) -> int:
    """Position on the forward path (``received`` = 0); a side state has none."""
    return FORWARD.index(state)


def later(a: str, b: str) -> str:
    """The later of two forward states."""
    return a if rank(a) >= rank(b) else b


def move(current: str, target: str, progress: str | None = None, *, exchange_id: int | None = None) -> Move:
    """Decide the move from ``current`` to ``target`` (see the table in the module docstring).

    :param current: the exchange's state now.
    :param target: the state a step reports.
    :param progress: the furthest forward state reached (``None``: ``current`` when forward, else ``received``).
    :param exchange_id: only for the error message.
    :raises ValueError: ``target`` is not a state.
    :raises ExchangeStateError: the table does not allow the move.
    """
    if target not in EXCHANGE_STATES:
        raise ValueError(f"unknown exchange state {target!r}; one of {', '.join(EXCHANGE_STATES)}")
    if progress is None or progress not in FORWARD:
        progress = current if current in FORWARD else "received"
    if current in FORWARD:
        progress = later(progress, current)
    if target == current:
        return Move(current, progress)
    if current in FINAL or (current == "delivered" and target not in FORWARD):
        raise _illegal(current, target, exchange_id)
    if target in FORWARD:
        if current == FAILED:
            return Move(later(target, progress), later(target, progress), recovers=True)
        return Move(later(target, current), later(target, progress))  # same or earlier: a re-run, no-op
    if target == FAILED:
        return Move(FAILED, progress)
    # quarantined or duplicate: only while the request has not been taken further.
    if rank(progress) > rank(_LAST_BEFORE[target]) or (target == "duplicate" and current == FAILED):
        raise _illegal(current, target, exchange_id, progress)
    return Move(target, progress, recovers=current == FAILED)


def _illegal(current: str, target: str, exchange_id: int | None, progress: str | None = None) -> ExchangeStateError:
    which = f"exchange {exchange_id}" if exchange_id is not None else "the exchange"
    reached = f" (it had reached {progress!r})" if progress and progress != current else ""
    if current == "delivered":
        hint = "its result was delivered; a delivered exchange is never failed, refused or re-opened"
    elif current in FINAL:
        hint = f"{current!r} is final: the municipality must send a new request for a new exchange"
    else:
        hint = f"the request was already taken past {_LAST_BEFORE.get(target, current)!r}"
    return ExchangeStateError(
        f"{which} cannot move from {current!r} to {target!r}{reached}: {hint}. Nothing was changed; "
        "see the runbook, 'Re-run a failed exchange safely'."
    )
