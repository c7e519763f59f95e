"""Erasure and rectification (art. 16–17 GDPR): remove a person from what this system still holds.

Where a person's data can still live here, and what happens to it:

* **Staged intermediates of exchanges not yet delivered** — the validated request list
  (``valid.fernet``) and the matched rows (``matched.fernet``), Fernet-encrypted in the staging
  folder. They are rewritten without the person (atomic rename). A result already built but not
  delivered (``result.xlsx``, encrypted with the protocol's key) is withdrawn: the exchange goes
  back to ``matched`` so ``build_result`` rebuilds it from the rewritten rows.
* **The request file as the municipality sent it** (``received/`` on SFTP, ``request.fernet`` in
  staging, sealed there with the staging key) is encrypted with the password agreed between the two DPOs and is the municipality's
  own record of what it asked: it is not rewritten, and is deleted on its retention deadline
  (reported).
* **Results already delivered** — the municipality holds its copy and is controller of it; it
  learns of the request through a protocol-tagged audit record in its audit export.
* **The audit trail** keeps the person's keyed-HMAC reference until its legal term ends
  (accountability, art. 5(2) and 17(3)(b) GDPR); it holds no INSZ.
* **The entitlement store** is a copy of the Groeipakket's own files (the agency's source data):
  a correction is made there and reaches this store with the next refresh.

The request is recorded in the audit trail by the person's keyed HMAC only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, ledger
from welfare_exchange.audit.trail import subject_keys
from welfare_exchange.db.models import AuditRecord, AuditSubject, Exchange, Protocol, RetentionItem
from welfare_exchange.exchange import matching
from welfare_exchange.retention.runner import audit_cutoff
from welfare_exchange.settings import get_settings
from welfare_exchange.staging import RESULT_FILE, Staging

ENTITLEMENT_RECTIFICATION = (
    "The entitlement store is a copy of the Groeipakket's own files (the authentic source kept by the "
    "payment agency). It is not changed here: a wrong or outdated entitlement is rectified in the "
    "Groeipakket file by the payment agency (the family contacts its uitbetaler), and the correction "
    "reaches this store with its next refresh; later exchanges use the corrected data."
)


@dataclass
class ExchangeErasure:
    """What was done (or could not be done) for one exchange."""

    exchange_id: int
    protocol_id: int
    municipality: str
    exchange_date: str | None
    state: str
    delivered: bool
    request_rows_removed: int = 0
    matched_rows_removed: int = 0
    result_withdrawn: bool = False
    kept: list[str] = field(default_factory=list)


@dataclass
class ErasureReport:
    persons: int
    audit_record_id: int
    exchanges: list[ExchangeErasure]
    cannot_erase: list[str]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exchanges"] = [asdict(e) for e in self.exchanges]
        return out


def _exchanges_with(session: Session, numbers: list[str]) -> list[tuple[Exchange, Protocol]]:
    refs = subject_keys(numbers)
    ids = sa.select(AuditRecord.exchange_id).join(AuditSubject, AuditSubject.audit_id == AuditRecord.id).where(
        AuditSubject.subject_ref.in_(refs), AuditRecord.exchange_id.is_not(None)
    )
    return list(
        session.execute(
            sa.select(Exchange, Protocol)
            .join(Protocol, Protocol.id == Exchange.protocol_id)
            .where(Exchange.id.in_(ids))
            .order_by(Exchange.id)
        ).tuples()
    )


def _rewrite_staging(exchange: Exchange, protocol: Protocol, people: set[str], entry: ExchangeErasure) -> None:
    staging = Staging(protocol.id, exchange.id)
    if staging.has("valid"):
        numbers = staging.read_encrypted("valid").decode("ascii").split()
        kept = [n for n in numbers if n not in people]
        if len(kept) != len(numbers):
            staging.write_encrypted("valid", "\n".join(kept).encode("ascii"))
            entry.request_rows_removed = len(numbers) - len(kept)
    if staging.has("matched"):
        rows = matching.deserialise(staging.read_encrypted("matched"))
        kept_rows = [r for r in rows if r.child_insz not in people and r.beneficiary_insz not in people]
        if len(kept_rows) != len(rows):
            staging.write_encrypted("matched", matching.serialise(kept_rows))
            entry.matched_rows_removed = len(rows) - len(kept_rows)
    if entry.matched_rows_removed and staging.has(RESULT_FILE):
        # The built result still has the person's rows: withdraw it; build_result rebuilds it
        # from the rewritten rows (its reuse check needs the file and the ledger hash).
        staging.remove(RESULT_FILE)
        entry.result_withdrawn = True


def _pending_deadlines(session: Session, exchange_id: int, kinds: tuple[str, ...]) -> list[str]:
    return sorted(
        {
            d.isoformat()
            for d in session.scalars(
                sa.select(RetentionItem.deadline).where(
                    RetentionItem.exchange_id == exchange_id, RetentionItem.kind.in_(kinds), RetentionItem.deleted_at.is_(None)
                )
            )
        }
    )


def erase_subject(session: Session, numbers: list[str], reason: str, *, actor: audit.Actor) -> ErasureReport:
    """Handle an erasure or rectification request for the people in ``numbers``.

    :param numbers: validated INSZ numbers (never logged, never stored: only their keyed HMAC).
    :param reason: the request's ground or case reference — no names (it goes into the audit).
    """
    people = set(numbers)
    entries: list[ExchangeErasure] = []
    delivered_by_protocol: dict[int, tuple[Protocol, list[int]]] = {}
    for exchange, protocol in _exchanges_with(session, numbers):
        delivered = exchange.state == "delivered"
        entry = ExchangeErasure(
            exchange_id=exchange.id, protocol_id=protocol.id, municipality=protocol.municipality,
            exchange_date=exchange.exchange_date.isoformat() if exchange.exchange_date else None,
            state=exchange.state, delivered=delivered,
        )
        if delivered:
            delivered_by_protocol.setdefault(protocol.id, (protocol, []))[1].append(exchange.id)
            result_deadlines = _pending_deadlines(session, exchange.id, ("result_file",))
            entry.kept.append(
                f"result delivered to {protocol.municipality}: the municipality holds its copy and handles the request "
                "for it (it sees this request in its audit export)"
                + (f"; the copy in its outbox/ is deleted on {', '.join(result_deadlines)}" if result_deadlines else "")
            )
        else:
            _rewrite_staging(exchange, protocol, people, entry)
            if entry.result_withdrawn:
                ledger.withdraw_result(session, exchange)
            if entry.request_rows_removed or entry.matched_rows_removed:
                audit.record(
                    session, "subject.erased_from_staging", actor=actor, protocol=protocol, exchange_id=exchange.id,
                    counts={"request_rows_removed": entry.request_rows_removed,
                            "matched_rows_removed": entry.matched_rows_removed,
                            "result_withdrawn": entry.result_withdrawn},
                    message=f"staged intermediates of exchange {exchange.id} (not delivered) rewritten without the "
                    "person(s) of an erasure request",
                )
        request_deadlines = _pending_deadlines(session, exchange.id, ("request_file", "quarantine", "staging"))
        if request_deadlines:
            entry.kept.append(
                "the request file as the municipality sent it (encrypted with the DPOs' password) is not rewritten; "
                f"it is deleted on {', '.join(request_deadlines)}"
            )
        entries.append(entry)

    record = audit.record(
        session, "subject.erasure_request", actor=actor, subjects=numbers,
        counts={"persons": len(numbers), "exchanges": len(entries),
                "exchanges_rewritten": sum(1 for e in entries if e.request_rows_removed or e.matched_rows_removed),
                "delivered_exchanges": sum(1 for e in entries if e.delivered)},
        message=f"erasure/rectification request (art. 16-17 GDPR): {reason}",
    )
    for protocol, exchange_ids in delivered_by_protocol.values():
        # Tagged with the protocol, so it is in the municipality's audit export: that is how the
        # municipality, controller of the delivered copy, learns of the request.
        audit.record(
            session, "subject.erasure_notice", actor=actor, protocol=protocol, subjects=numbers,
            counts={"exchanges": len(exchange_ids)},
            message=f"an erasure/rectification request concerns data delivered to {protocol.municipality} in "
            f"exchange(s) {', '.join(map(str, exchange_ids))}: the municipality handles it for its copy "
            f"(request recorded as audit record {record.id})",
        )
    return ErasureReport(persons=len(numbers), audit_record_id=record.id, exchanges=entries,
                         cannot_erase=cannot_erase(entries))


def cannot_erase(entries: list[ExchangeErasure]) -> list[str]:
    """What stays, and why — printed with every erasure request and documented in docs/retention.md."""
    settings = get_settings()
    today = dt.date.today()
    out = [
        f"The audit trail keeps a keyed-HMAC reference to the person (never the INSZ) for its legal term of "
        f"{settings.audit_retention_days} days (WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS): it proves what was "
        f"exchanged, with whom and why (accountability, art. 5(2) and 17(3)(b) GDPR) and cannot be altered without "
        f"breaking its hash chain. Records are pruned when their term ends (today: those before "
        f"{audit_cutoff(today, settings.audit_retention_days).date().isoformat()}).",
    ]
    delivered = [e for e in entries if e.delivered]
    if delivered:
        out.append(
            "Data already delivered cannot be recalled by the agency: "
            + "; ".join(f"exchange {e.exchange_id} to {e.municipality} on {e.exchange_date}" for e in delivered)
            + ". Each municipality is controller of its copy and learns of this request through its audit export."
        )
    for e in entries:
        out.extend(f"Exchange {e.exchange_id}: {text}." for text in e.kept if "request file" in text)
    out.append(ENTITLEMENT_RECTIFICATION)
    return out


def render_text(report: ErasureReport) -> str:
    lines = [f"Erasure/rectification request recorded in the audit trail (record {report.audit_record_id}) "
             f"for {report.persons} person(s)."]
    done = [e for e in report.exchanges if e.request_rows_removed or e.matched_rows_removed]
    if not report.exchanges:
        lines.append("No exchange in this system included their data.")
    elif not done:
        lines.append("Nothing of theirs was left to erase in staging.")
    for e in done:
        text = (f"  exchange {e.exchange_id} ({e.municipality}, {e.exchange_date}, not delivered): removed "
                f"{e.request_rows_removed} row(s) from the validated request and {e.matched_rows_removed} from the matched rows")
        if e.result_withdrawn:
            text += "; the staged result was withdrawn: clear `build_result` of its run to rebuild it before delivery"
        lines.append(text)
    lines.append("")
    lines.append("What cannot be erased, and why:")
    lines.extend(f"  - {text}" for text in report.cannot_erase)
    return "\n".join(lines)
