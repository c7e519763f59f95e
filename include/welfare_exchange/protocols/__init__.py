"""The protocol registry: lifecycle of data-exchange protocols and the gate every exchange passes.

:mod:`~welfare_exchange.protocols.offer` holds the shape and check of a ``method2`` protocol's
offer (a field of the protocol, checked when it is created; Method 2 reads it).
"""

from welfare_exchange.protocols.registry import (
    ALLOWED_RESULT_FIELDS,
    KINDS,
    REFERRAL_FIELDS,
    STATUSES,
    TRANSITIONS,
    GateDecision,
    amend,
    check_gate,
    create,
    get,
    transition,
    write_snapshot,
)

__all__ = [
    "ALLOWED_RESULT_FIELDS",
    "KINDS",
    "REFERRAL_FIELDS",
    "STATUSES",
    "TRANSITIONS",
    "GateDecision",
    "amend",
    "check_gate",
    "create",
    "get",
    "transition",
    "write_snapshot",
]
