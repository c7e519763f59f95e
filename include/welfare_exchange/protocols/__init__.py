"""The protocol registry: lifecycle of data-exchange protocols and the gate every exchange passes."""

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
