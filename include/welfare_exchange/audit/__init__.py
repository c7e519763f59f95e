"""The audit trail: an append-only, hash-chained processing register (*verwerkingsregister*).

Every step of every exchange records who did what, about whom (a keyed HMAC of the INSZ, never
the number itself), why (protocol and legal basis), when, with file hashes and counts.

* :func:`record` appends one fact (idempotently, when it has a ``fact_key``);
* :func:`verify` proves the chain in the database intact;
  :func:`welfare_exchange.audit.integrity.check` adds the authenticated anchors kept outside it
  (:mod:`welfare_exchange.audit.anchors`) — what ``welfare-exchange audit verify`` runs;
* :func:`export_rows` gives the register view for a DPO or an auditor (filtered by
  :class:`RegisterFilter`), :func:`write_csv` writes it as CSV;
* :func:`prune` removes records past their legal term as a chained, anchored fact.
"""

from welfare_exchange.audit.trail import (
    Actor,
    PruneVoucher,
    RegisterFilter,
    VerifyResult,
    canonical_encoding,
    count_rows,
    export_rows,
    fact_exists,
    prune,
    record,
    subject_key,
    subject_ref,
    verify,
    write_csv,
)

__all__ = [
    "Actor",
    "PruneVoucher",
    "RegisterFilter",
    "VerifyResult",
    "canonical_encoding",
    "count_rows",
    "export_rows",
    "fact_exists",
    "prune",
    "record",
    "subject_key",
    "subject_ref",
    "verify",
    "write_csv",
]
