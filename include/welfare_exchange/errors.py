"""Exceptions with messages a person can act on — and that never carry personal data.

Every message says what went wrong, for which exchange or file, and what to do next. None
may contain an INSZ number, a name or a file's content: messages end up in task logs, the
Airflow UI and e-mails to operators.
"""

from __future__ import annotations


class WelfareExchangeError(Exception):
    """Base of every error this package raises on purpose."""

    #: Short machine-readable reason, used in audit records and validation reports.
    code: str = "error"
    #: No retry can fix it (bad input, a closed protocol): a task fails at once (:func:`is_permanent`).
    permanent: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(WelfareExchangeError):
    """Bad input from outside (a file, a command-line argument): the CLI exits with code 2."""

    code = "bad_input"
    permanent = True


class ProtocolError(WelfareExchangeError):
    """The protocol does not allow what was asked (not signed, revoked, wrong channel, …)."""

    code = "protocol"
    permanent = True


class IllegalTransition(ProtocolError):
    """A protocol status change that its lifecycle does not allow."""

    code = "illegal_transition"


class AgencySideError(WelfareExchangeError):
    """Something failed on the agency's side (its machine, its configuration), not in the input.

    Never answered with a refusal to the municipality: the operator fixes it and the task is
    retried. ``code`` is the cause (:mod:`welfare_exchange.failures`).
    """

    code = "unknown"


def is_permanent(err: BaseException) -> bool:
    """Whether no retry can fix ``err``: the task fails at once
    (:mod:`welfare_exchange.orchestration.tasks` is the one place that acts on it)."""
    return bool(getattr(err, "permanent", False))
