"""The Exchanges overview: one row per protocol, read from the project database.

What a data engineer needs at a glance — is the protocol open, what did its last exchange do,
where is it now (the ledger state), what is due for deletion, is the audit trail intact — and
nothing more. Personal data cannot appear: the queries select only protocol metadata (a
municipality is a public body), ledger states and dates, integer counts and Airflow ids.
The request file's *name* is left out on purpose: the municipality chooses it and could put
anything in it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.audit import integrity
from welfare_exchange.db.models import Exchange, Protocol, RetentionItem
from welfare_exchange.protocols.registry import check_gate

#: What each ledger state means for the operator: the step the exchange has reached.
STEP_LABELS = {
    "received": "request fetched, not yet validated",
    "duplicate": "same file as an earlier exchange: skipped",
    "validated": "request decrypted and validated",
    "quarantined": "request refused: in quarantine, report sent",
    "matched": "entitlements matched",
    "built": "result built and encrypted, not yet delivered",
    "delivered": "result delivered",
    "failed": "failed",
}

#: Ledger states after which nothing more happens to an exchange.
FINAL_STATES = frozenset({"delivered", "duplicate", "quarantined", "failed"})

#: How long an audit-chain verification is reused. Verifying walks the whole trail, which is
#: far too slow to repeat on every page view once the trail holds years of facts.
AUDIT_CACHE_SECONDS = 60.0


@dataclass
class LastExchange:
    """The most recent exchange under a protocol (what the ledger knows about it)."""

    id: int
    state: str
    step: str
    final: bool
    exchange_date: str | None
    updated_at: str | None
    failure_code: str | None
    counts: dict[str, int]
    dag_id: str | None
    run_id: str | None
    run_path: str | None


@dataclass
class Retention:
    """Deletion deadlines of a protocol's files and intermediates."""

    pending: int = 0
    overdue: int = 0
    deleted: int = 0
    next_deadline: str | None = None


@dataclass
class ProtocolRow:
    """One row of the view: a protocol and its municipality."""

    protocol_id: int
    nis_code: str
    municipality: str
    kind: str
    channel: str
    status: str
    gate: str
    valid_from: str | None
    valid_until: str | None
    dag_id: str | None
    dag_path: str | None
    exchanges: int
    by_state: dict[str, int] = field(default_factory=dict)
    last_exchange: LastExchange | None = None
    retention: Retention = field(default_factory=Retention)


@dataclass
class AuditStatus:
    """The audit trail's verification (see :func:`welfare_exchange.audit.integrity.check`)."""

    ok: bool
    checked: int
    broken_id: int | None
    reason: str | None
    verified_at: str


@dataclass
class Overview:
    """Everything the page and the JSON endpoint show."""

    generated_at: str
    today: str
    audit: AuditStatus
    protocols: list[ProtocolRow]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_path(dag_id: str | None, run_id: str | None) -> str | None:
    """The Airflow UI path of a DAG run, ``/dags/<dag_id>/runs/<run_id>`` (ids URL-escaped)."""
    if not dag_id or not run_id:
        return None
    return f"/dags/{urllib.parse.quote(dag_id, safe='')}/runs/{urllib.parse.quote(run_id, safe='')}"


def dag_path(dag_id: str | None) -> str | None:
    """The Airflow UI path of a DAG."""
    return f"/dags/{urllib.parse.quote(dag_id, safe='')}" if dag_id else None


def _dag_id_of(protocol: Protocol) -> str | None:
    # The DAG id is derived from the protocol exactly as the DAG factory does; imported late
    # because the factory pulls in the Airflow task SDK, which the view itself does not need.
    entry = {"id": protocol.id, "nis_code": protocol.nis_code, "municipality": protocol.municipality}
    if protocol.kind == "method1":  # over SFTP or e-mail: the same DAG factory, the same id
        from welfare_exchange.exchange.dag_factory import method1_dag_id

        return method1_dag_id(entry)
    if protocol.kind == "method2":
        from welfare_exchange.exchange.method2_dag import method2_dag_id

        return method2_dag_id(entry)
    if protocol.kind == "structural":
        return "structural_feeds"  # one DAG for every municipality's feed
    return None


def _iso(value: dt.date | dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _int_counts(counts: dict[str, Any] | None) -> dict[str, int]:
    # Counts are integers by contract; anything else is not shown rather than trusted.
    return {str(k): v for k, v in (counts or {}).items() if isinstance(v, int) and not isinstance(v, bool)}


class _AuditCache:
    """Process-wide cache of the last verification, per database URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, AuditStatus]] = {}

    def get(self, session: Session, max_age: float) -> AuditStatus:
        key = str(session.get_bind().url)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry[0] < max_age:
                return entry[1]
            # The same check as `welfare-exchange audit verify`: the chain, then its anchors.
            report = integrity.check(session)
            status = AuditStatus(
                ok=report.ok,
                checked=report.chain.checked,
                broken_id=report.broken_id,
                reason=report.reason,
                verified_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            )
            self._entries[key] = (time.monotonic(), status)
            return status

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


audit_cache = _AuditCache()


def overview(session: Session, today: dt.date | None = None, *, audit_max_age: float = AUDIT_CACHE_SECONDS) -> Overview:
    """The overview of every protocol, newest activity first within the registry order.

    Four queries whatever the number of protocols: protocols, exchange counts per state,
    the latest exchange of each protocol, retention figures per protocol.

    :param today: the day the gate and "overdue" are judged on (default: today, UTC).
    :param audit_max_age: reuse a verification younger than this many seconds (0: verify now).
    """
    today = today or dt.datetime.now(dt.timezone.utc).date()
    protocols = list(session.scalars(sa.select(Protocol).order_by(Protocol.nis_code, Protocol.id)))

    by_state: dict[int, dict[str, int]] = {}
    for protocol_id, state, n in session.execute(
        sa.select(Exchange.protocol_id, Exchange.state, sa.func.count()).group_by(Exchange.protocol_id, Exchange.state)
    ):
        by_state.setdefault(protocol_id, {})[state] = n

    # The latest exchange per protocol: highest id (ids grow with time; timestamps can tie).
    latest_ids = sa.select(sa.func.max(Exchange.id)).group_by(Exchange.protocol_id)
    latest = {e.protocol_id: e for e in session.scalars(sa.select(Exchange).where(Exchange.id.in_(latest_ids)))}

    not_deleted = RetentionItem.deleted_at.is_(None)
    retention: dict[int, Retention] = {}
    for protocol_id, pending, overdue, deleted, next_deadline in session.execute(
        sa.select(
            RetentionItem.protocol_id,
            sa.func.count().filter(not_deleted),
            sa.func.count().filter(not_deleted, RetentionItem.deadline < today),
            sa.func.count().filter(RetentionItem.deleted_at.is_not(None)),
            sa.func.min(RetentionItem.deadline).filter(not_deleted),
        ).group_by(RetentionItem.protocol_id)
    ):
        retention[protocol_id] = Retention(pending=pending, overdue=overdue, deleted=deleted, next_deadline=_iso(next_deadline))

    rows = []
    for p in protocols:
        dag_id = _dag_id_of(p)
        last = latest.get(p.id)
        last_row = None
        if last is not None:
            last_row = LastExchange(
                id=last.id,
                state=last.state,
                step=STEP_LABELS.get(last.state, last.state),
                final=last.state in FINAL_STATES,
                exchange_date=_iso(last.exchange_date),
                updated_at=_iso(last.updated_at),
                failure_code=last.failure_code,
                counts=_int_counts(last.counts),
                dag_id=last.dag_id,
                run_id=last.run_id,
                run_path=run_path(last.dag_id, last.run_id),
            )
        states = by_state.get(p.id, {})
        rows.append(
            ProtocolRow(
                protocol_id=p.id,
                nis_code=p.nis_code,
                municipality=p.municipality,
                kind=p.kind,
                channel=p.channel,
                status=p.status,
                gate=check_gate(p, today).state,
                valid_from=_iso(p.valid_from),
                valid_until=_iso(p.valid_until),
                dag_id=dag_id,
                dag_path=dag_path(dag_id),
                exchanges=sum(states.values()),
                by_state=dict(sorted(states.items())),
                last_exchange=last_row,
                retention=retention.get(p.id, Retention()),
            )
        )
    return Overview(
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        today=today.isoformat(),
        audit=audit_cache.get(session, audit_max_age),
        protocols=rows,
    )
