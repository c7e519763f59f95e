"""What is due for deletion when, per protocol: the view behind ``welfare-exchange retention status``."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import AuditRecord, Exchange, Protocol, RetentionItem
from welfare_exchange.retention import rules
from welfare_exchange.retention.runner import audit_cutoff, shown_location
from welfare_exchange.settings import get_settings


def retention_status(session: Session, as_of: dt.date) -> dict[str, Any]:
    """Pending deletions per protocol, with the deadline the next run will use.

    Deadlines are shown as the run will apply them: clamped to the legal maximum (flagged),
    and ``overdue`` when on or before ``as_of`` (the next run deletes them).
    """
    settings = get_settings()
    rows = session.execute(
        sa.select(RetentionItem, Exchange.exchange_date)
        .outerjoin(Exchange, Exchange.id == RetentionItem.exchange_id)
        .where(RetentionItem.deleted_at.is_(None))
        .order_by(RetentionItem.protocol_id, RetentionItem.deadline, RetentionItem.id)
    ).all()
    deleted = dict(
        session.execute(
            sa.select(RetentionItem.protocol_id, sa.func.count())
            .where(RetentionItem.deleted_at.is_not(None))
            .group_by(RetentionItem.protocol_id)
        ).all()
    )
    items: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for item, exchange_date in rows:
        deadline, clamped = rules.effective_deadline(item.deadline, exchange_date, settings.max_retention_days)
        items[item.protocol_id].append(
            {
                "item": item.id,
                "exchange_id": item.exchange_id,
                "kind": item.kind,
                "where": item.where,
                "location": shown_location(item),
                "missing_since": item.missing_since.isoformat() if item.missing_since else None,
                "deadline": deadline.isoformat(),
                "rule": rules.RULE_CLAMPED.format(days=settings.max_retention_days) if clamped else item.rule,
                "clamped": clamped,
                "overdue": deadline <= as_of,
            }
        )
    protocols = []
    for protocol in session.scalars(
        sa.select(Protocol).where(Protocol.id.in_(set(items) | set(deleted))).order_by(Protocol.id)
    ):
        pending = items.get(protocol.id, [])
        protocols.append(
            {
                "protocol_id": protocol.id,
                "municipality": protocol.municipality,
                "nis_code": protocol.nis_code,
                "status": protocol.status,
                "request_retention_days": protocol.request_retention_days,
                "result_retention_days": protocol.result_retention_days,
                "delete_request_after_match": protocol.delete_request_after_match,
                "pending": len(pending),
                "overdue": sum(1 for i in pending if i["overdue"]),
                "missing": sum(1 for i in pending if i["missing_since"]),
                "next_deadline": min((i["deadline"] for i in pending), default=None),
                "deleted": deleted.get(protocol.id, 0),
                "items": pending,
            }
        )
    cutoff = audit_cutoff(as_of, settings.audit_retention_days)
    prunable = session.scalar(
        sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.recorded_at < cutoff.isoformat(timespec="microseconds"))
    )
    return {
        "as_of": as_of.isoformat(),
        "max_retention_days": settings.max_retention_days,
        "audit": {
            "retention_days": settings.audit_retention_days,
            "prune_before": cutoff.date().isoformat(),
            "records_due_for_pruning": prunable,
        },
        "protocols": protocols,
    }


def render_text(status: dict[str, Any]) -> str:
    """The status as an operator reads it in a terminal."""
    lines = [
        f"Retention status on {status['as_of']} (legal maximum {status['max_retention_days']} days; "
        f"audit kept {status['audit']['retention_days']} days: records before {status['audit']['prune_before']} "
        f"are pruned, {status['audit']['records_due_for_pruning']} due)",
    ]
    if not status["protocols"]:
        lines.append("Nothing recorded for deletion yet.")
    for p in status["protocols"]:
        lines.append("")
        lines.append(
            f"protocol {p['protocol_id']} · {p['municipality']} ({p['nis_code']}) · {p['status']} · "
            f"request {p['request_retention_days']} d{' (deleted after matching)' if p['delete_request_after_match'] else ''}, "
            f"result {p['result_retention_days']} d"
        )
        lines.append(f"  pending {p['pending']}, overdue {p['overdue']}, next {p['next_deadline'] or '-'}, deleted {p['deleted']}")
        groups: dict[tuple[str, str, str], int] = defaultdict(int)
        for item in p["items"]:
            groups[(item["deadline"], item["kind"], item["where"])] += 1
        for (deadline, kind, where), count in sorted(groups.items()):
            due = "OVERDUE " if deadline <= status["as_of"] else ""
            lines.append(f"  {due}{deadline}  {count} × {kind} ({where})")
        for item in p["items"]:
            if item["clamped"]:
                lines.append(f"  item {item['item']} ({item['kind']}): clamped to the {item['rule']}")
            if item["missing_since"]:
                lines.append(f"  MISSING item {item['item']} ({item['kind']} at {item['location']}): not found since "
                             f"{item['missing_since']}; see the runbook, 'A copy to delete is missing'")
    return "\n".join(lines)
