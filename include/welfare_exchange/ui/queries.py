"""What the Exchanges view shows, read from the project database and Airflow's API.

* :func:`overview` — one row per protocol: is it open, where is its exchange *now* (waiting,
  running, failed with its cause, refused, delivered — :mod:`welfare_exchange.ui.states`), what
  is due for deletion, is the audit trail intact;
* :func:`history` — every exchange and run, filtered (municipality or NIS, kind, state,
  period) or looked up by exchange id;
* :func:`register` — the processing register (the audit export), filtered and paged.

Personal data cannot appear: the queries select protocol metadata (a municipality is a public
body), states, dates, integer counts, hashes, Airflow ids and the agency's own file names. The
request file's *name* is left out on purpose: the municipality chooses it and could put
anything in it. Airflow is asked with the caller's own token; when it cannot be read, the view
says so and shows what the ledger knows.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, failures
from welfare_exchange.audit import integrity
from welfare_exchange.db.models import AuditRecord, Exchange, Protocol, RetentionItem, SideEffect
from welfare_exchange.runinfo import BRUSSELS
from welfare_exchange.channels.common import result_file_name
from welfare_exchange.feeds.config import get_feed_config
from welfare_exchange.protocols.registry import check_gate
from welfare_exchange.settings import get_settings
from welfare_exchange.ui import states
from welfare_exchange.orchestration.airflow_api import MAX_ROWS, AirflowApi, AirflowApiError, Run, Task
from welfare_exchange.untrusted import shown

log = logging.getLogger(__name__)

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
class Current:
    """Where a protocol's exchange is now: the latest run or exchange, and its true state."""

    exchange_id: int | None
    dag_id: str | None
    run_id: str | None
    run_path: str | None
    state: dict[str, Any]


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
    current: Current | None = None
    retention: Retention = field(default_factory=Retention)
    #: A referral agreement's latest evaluation report: its file, when, the (suppressed) figures.
    evaluation: dict[str, Any] | None = None


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
    #: ``ok``, or why Airflow's state could not be read (the ledger's is shown then).
    airflow: str = "ok"

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
        from welfare_exchange.orchestration.dag_factory import method1_dag_id

        return method1_dag_id(entry)
    if protocol.kind == "method2":
        from welfare_exchange.orchestration.method2_dag import method2_dag_id

        return method2_dag_id(entry)
    if protocol.kind == "referral":
        from welfare_exchange.orchestration.referral_dag import referral_dag_id

        return referral_dag_id(entry)
    if protocol.kind == "structural":
        return "structural_feeds"  # one DAG for every municipality's feed
    return None


def _evaluation(session: Session, protocol: Protocol) -> dict[str, Any] | None:
    if protocol.kind != "referral":
        return None
    from welfare_exchange.referral.steps import latest_evaluation

    found = latest_evaluation(session, protocol.id)
    if found is None:
        return None
    return {"file": found["file"], "at": _iso(found["at"]), "outcomes": found["outcomes"]}


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


# ----------------------------------------------------------------------------- the true state


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _run_state(tasks: tuple[Task, ...]) -> str:
    """A run's state as its tasks tell it (for a run known only by its tasks)."""
    if any(t.state in states.ACTIVE_TASK_STATES or t.state is None for t in tasks):
        return "running"
    return "failed" if any(t.state in ("failed", "upstream_failed") for t in tasks) else "success"


class _Airflow:
    """What the view reads from Airflow for one page, or why it could not (then: ledger only)."""

    def __init__(self, api: AirflowApi | None) -> None:
        self.api = api
        self.status = "ok" if api is not None else "not asked"

    def call(self, what, default):
        if self.api is None:
            return default
        try:
            return what(self.api)
        except AirflowApiError as err:
            log.warning("Exchanges view: Airflow's state unavailable (%s)", err)
            self.status = f"unavailable: {err}"
            self.api = None
            return default

    def with_tasks(self, runs: Iterable[Run], also: Iterable[tuple[str, str]] = ()) -> dict[tuple[str, str], Run]:
        """Runs (and runs known only by id) with their tasks."""
        known = {(r.dag_id, r.run_id): r for r in runs}
        keys = set(known) | set(also)
        tasks = self.call(lambda api: api.task_instances(keys), {}) if keys else {}
        out = {}
        for key in keys:
            if key not in tasks:
                continue
            run = known.get(key)
            if run is None:
                run = Run(key[0], key[1], _run_state(tasks[key]), None, None, None)
            out[key] = Run(run.dag_id, run.run_id, run.state, run.run_after, run.start_date, run.end_date, tasks[key])
        return out


def _facts(session: Session, run_ids: set[str]) -> tuple[dict[tuple[str, str], dict[str, states.FailureFact]], dict[tuple[str, str], str]]:
    """Per run: the latest ``task.failed`` fact of each task, and what ended a run without an exchange."""
    failed: dict[tuple[str, str], dict[str, states.FailureFact]] = {}
    outcome: dict[tuple[str, str], str] = {}
    if not run_ids:
        return failed, outcome
    rows = session.execute(
        sa.select(AuditRecord.dag_id, AuditRecord.run_id, AuditRecord.task_id, AuditRecord.action, AuditRecord.message,
                  AuditRecord.recorded_at)
        .where(AuditRecord.run_id.in_(sorted(run_ids)),
               AuditRecord.action.in_(("task.failed", "request.none_arrived", "request.duplicate")))
        .order_by(AuditRecord.id)
    )
    for dag_id, run_id, task_id, action, message, recorded_at in rows:
        key = (dag_id, run_id)
        if action == "task.failed":
            recorded = failures.parse_fact_message(message)
            if recorded is not None:
                at = dt.datetime.fromisoformat(recorded_at) if recorded_at else None
                failed.setdefault(key, {})[task_id] = states.FailureFact(recorded.cause, recorded.section, at)
        else:
            outcome[key] = "no_request" if action == "request.none_arrived" else "duplicate"
    return failed, outcome


def _deliveries(session: Session, exchanges: list[Exchange], protocols: dict[int, Protocol]) -> dict[int, states.Delivery]:
    """The delivery of each delivered exchange: when, the file as the agency named it, size, hash."""
    delivered = [e.id for e in exchanges if e.state == "delivered"]
    out: dict[int, states.Delivery] = {}
    if not delivered:
        return out
    effects = session.scalars(
        sa.select(SideEffect).where(SideEffect.exchange_id.in_(delivered), SideEffect.state == "done",
                                    SideEffect.idempotency_key.endswith(":delivered"))
    )
    by_id = {e.id: e for e in exchanges}
    for effect in effects:
        exchange = by_id[effect.exchange_id]
        name = posixpath.basename(effect.target or "")
        if not name.endswith((".xlsx", ".txt", ".csv", ".pdf")) and protocols[exchange.protocol_id].kind == "method1":
            name = result_file_name(protocols[exchange.protocol_id], exchange)
        out[exchange.id] = states.Delivery(
            at=effect.done_at, file=shown(name) if name else None, size=(effect.detail or {}).get("bytes"),
            sha256=effect.sha256 or exchange.result_sha256,
        )
    return out


def _due(protocol: Protocol, exchange: Exchange | None) -> dt.datetime | None:
    """When the exchange had to be delivered: a structural feed's deadline after its interval."""
    if protocol.kind != "structural" or exchange is None or exchange.exchange_date is None:
        return None
    return dt.datetime.combine(exchange.exchange_date, dt.time(), tzinfo=BRUSSELS) + get_feed_config().deadline


def _ledger(exchange: Exchange | None, deliveries: dict[int, states.Delivery]) -> states.Ledger | None:
    if exchange is None:
        return None
    return states.Ledger(exchange.state, exchange.failure_code, exchange.updated_at, deliveries.get(exchange.id))


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is not None and moment.tzinfo is None:  # SQLite hands back naive UTC
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment


@dataclass
class _Row:
    protocol: Protocol
    exchange: Exchange | None
    run: Run | None
    key: tuple[str, str] | None

    @property
    def when(self) -> dt.datetime:
        moments = [m for m in (self.run.run_after if self.run else None, _aware(self.exchange.created_at) if self.exchange else None) if m]
        return max(moments) if moments else dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _states_of(session: Session, rows: list[_Row], now: dt.datetime) -> list[dict[str, Any]]:
    """Derive every row's state (one query per kind of fact, whatever the number of rows)."""
    protocols = {r.protocol.id: r.protocol for r in rows}
    exchanges = [r.exchange for r in rows if r.exchange is not None]
    deliveries = _deliveries(session, exchanges, protocols)
    failed, outcome = _facts(session, {r.key[1] for r in rows if r.key})
    window = dt.timedelta(seconds=get_settings().arrival_window_seconds)
    out = []
    for row in rows:
        e, p = row.exchange, row.protocol
        state = states.derive(run=row.run, ledger=_ledger(e, deliveries), facts=failed.get(row.key) if row.key else None,
                              outcome=outcome.get(row.key) if row.key else None, window=window, due=_due(p, e), now=now)
        dag_id, run_id = row.key if row.key else (None, None)
        out.append({
            "exchange_id": e.id if e else None,
            "protocol_id": p.id, "municipality": p.municipality, "nis_code": p.nis_code, "kind": p.kind,
            "channel": p.channel, "dag_id": dag_id, "run_id": run_id, "run_path": run_path(dag_id, run_id),
            "exchange_date": _iso(e.exchange_date) if e else None,
            "started": row.when.isoformat(timespec="seconds") if row.when.year > 1 else None,
            "counts": _int_counts(e.counts) if e else {},
            **state.to_dict(),
        })
    return out


def _protocol_dag_ids(protocols: Iterable[Protocol]) -> dict[str, Protocol]:
    """The DAG of each protocol that has one of its own (Method 1, Method 2)."""
    out = {}
    for protocol in protocols:
        dag_id = _dag_id_of(protocol)
        if dag_id and protocol.kind != "structural":
            out[dag_id] = protocol
    return out


def _current(session: Session, protocols: list[Protocol], latest: dict[int, Exchange], airflow: _Airflow,
             now: dt.datetime) -> dict[int, Current]:
    """Each protocol's exchange *now*: its running run, else its last run if that failed, else its latest exchange."""
    dags = _protocol_dag_ids(protocols)
    chosen: dict[int, Run] = {}
    for run in airflow.call(lambda api: api.runs(dags, states=("queued", "running")), []):
        chosen.setdefault(dags[run.dag_id].id, run)  # newest first
    failed_dags = airflow.call(lambda api: api.dags_last_run("failed", dags), set())
    for run in airflow.call(lambda api: api.runs(failed_dags, states=("failed",)), []) if failed_dags else []:
        chosen.setdefault(dags[run.dag_id].id, run)
    also = {(e.dag_id, e.run_id) for pid, e in latest.items() if pid not in chosen and e.dag_id and e.run_id
            and e.state not in ("quarantined", "duplicate")}
    runs = airflow.with_tasks(chosen.values(), also)
    by_run = {}
    if chosen:
        for e in session.scalars(sa.select(Exchange).where(Exchange.run_id.in_(sorted({r.run_id for r in chosen.values()})))):
            by_run[(e.dag_id, e.run_id)] = e
    rows = []
    for protocol in protocols:
        if protocol.id in chosen:
            key = (chosen[protocol.id].dag_id, chosen[protocol.id].run_id)
            rows.append(_Row(protocol, by_run.get(key), runs.get(key, chosen[protocol.id]), key))
        elif protocol.id in latest:
            e = latest[protocol.id]
            key = (e.dag_id, e.run_id) if e.dag_id and e.run_id else None
            rows.append(_Row(protocol, e, runs.get(key) if key else None, key))
    return {
        row["protocol_id"]: Current(row["exchange_id"], row["dag_id"], row["run_id"], row["run_path"],
                                    {k: row[k] for k in ("state", "label", "since", "until", "step", "failure", "refusal",
                                                         "delivery", "due", "retryable", "sources")})
        for row in _states_of(session, rows, now)
    }


def overview(session: Session, today: dt.date | None = None, *, api: AirflowApi | None = None,
             audit_max_age: float = AUDIT_CACHE_SECONDS, now: dt.datetime | None = None) -> Overview:
    """The overview of every protocol, in registry order (NIS code).

    A few queries whatever the number of protocols: protocols, exchange counts per state, the
    latest exchange of each protocol, retention figures per protocol, facts of the chosen runs;
    and from Airflow the active runs, the DAGs whose last run failed, and those runs' tasks.

    :param today: the day the gate and "overdue" are judged on (default: today, UTC).
    :param api: Airflow's API as the caller (``None``: the ledger's states only).
    :param audit_max_age: reuse a verification younger than this many seconds (0: verify now).
    """
    now = now or _now()
    today = today or now.date()
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

    airflow = _Airflow(api)
    current = _current(session, protocols, latest, airflow, now)
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
        states_ = by_state.get(p.id, {})
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
                exchanges=sum(states_.values()),
                by_state=dict(sorted(states_.items())),
                last_exchange=last_row,
                current=current.get(p.id),
                retention=retention.get(p.id, Retention()),
                evaluation=_evaluation(session, p),
            )
        )
    return Overview(
        generated_at=now.isoformat(timespec="seconds"),
        today=today.isoformat(),
        audit=audit_cache.get(session, audit_max_age),
        protocols=rows,
        airflow=airflow.status,
    )


# ----------------------------------------------------------------------------- history

#: Rows per page of the history and the register.
PAGE_SIZE = 25
#: The period the history shows unless asked otherwise.
DEFAULT_PERIOD = dt.timedelta(days=92)


@dataclass(frozen=True)
class HistoryFilter:
    """Which exchanges and runs the history shows.

    :param who: a NIS code, or part of a municipality's name (case does not matter).
    :param since: from this day; ``until``: up to and including this day (default: the last 92 days).
    :param exchange_id: just this exchange (the other filters are ignored).
    """

    who: str | None = None
    kind: str | None = None
    state: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    exchange_id: int | None = None
    page: int = 1


@dataclass
class History:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    since: str | None
    until: str | None
    airflow: str
    cut: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _matching_protocols(session: Session, f: HistoryFilter) -> list[Protocol]:
    query = sa.select(Protocol).order_by(Protocol.nis_code, Protocol.id)
    if f.kind:
        query = query.where(Protocol.kind == f.kind)
    if f.who:
        who = f.who.strip()
        query = query.where(sa.or_(Protocol.nis_code == who, sa.func.lower(Protocol.municipality).contains(who.lower())))
    return list(session.scalars(query))


def history(session: Session, f: HistoryFilter, *, api: AirflowApi | None = None, now: dt.datetime | None = None) -> History:
    """Every exchange and every run of the matching protocols in the period, newest first, with its state.

    A run that opened no exchange (waiting, no request arrived, failed before the request was
    taken) is a row of its own. At most :data:`~welfare_exchange.orchestration.airflow_api.MAX_ROWS` runs
    are read from Airflow (``cut`` says when there were more: narrow the period).
    """
    now = now or _now()
    airflow = _Airflow(api)
    if f.exchange_id is not None:
        exchange = session.get(Exchange, f.exchange_id)
        rows: list[_Row] = []
        if exchange is not None:
            protocol = session.get(Protocol, exchange.protocol_id)
            key = (exchange.dag_id, exchange.run_id) if exchange.dag_id and exchange.run_id else None
            runs = airflow.with_tasks((), {key} if key else ())
            rows = [_Row(protocol, exchange, runs.get(key) if key else None, key)]
        found = _states_of(session, rows, now)
        return History(found, len(found), 1, 1, None, None, airflow.status)

    until = f.until or now.date()
    since = f.since or (until - DEFAULT_PERIOD)
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.timezone.utc)
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    protocols = _matching_protocols(session, f)
    by_id = {p.id: p for p in protocols}
    exchanges = list(session.scalars(
        sa.select(Exchange).where(Exchange.protocol_id.in_(sorted(by_id)), Exchange.created_at >= start,
                                  Exchange.created_at < end).order_by(Exchange.id.desc()).limit(MAX_ROWS)
    )) if by_id else []
    dags = _protocol_dag_ids(protocols)
    listed = airflow.call(lambda api: api.runs(dags, since=start, until=end), []) if dags else []
    by_run = {(e.dag_id, e.run_id): e for e in exchanges if e.dag_id and e.run_id}
    # A finished run's tasks add nothing: the ledger and the audit's facts say how it ended.
    need = [r for r in listed if r.state != "success"]
    also = {key for key, e in by_run.items() if e.state not in ("quarantined", "duplicate", "delivered")}
    runs = {**{(r.dag_id, r.run_id): r for r in listed}, **airflow.with_tasks(need, also - {(r.dag_id, r.run_id) for r in listed})}
    rows = [_Row(by_id[e.protocol_id], e, runs.get((e.dag_id, e.run_id)), (e.dag_id, e.run_id) if e.dag_id else None)
            for e in exchanges]
    rows += [_Row(dags[r.dag_id], None, runs[(r.dag_id, r.run_id)], (r.dag_id, r.run_id))
             for r in listed if (r.dag_id, r.run_id) not in by_run]
    found = _states_of(session, rows, now)
    if f.state:
        found = [row for row in found if row["state"] == f.state]
    found.sort(key=lambda row: (row["started"] or "", row["exchange_id"] or 0), reverse=True)
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(max(1, f.page), pages)
    return History(found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], len(found), page, pages, since.isoformat(),
                   until.isoformat(), airflow.status, cut=len(listed) >= MAX_ROWS or len(exchanges) >= MAX_ROWS)


def exchange_facts(session: Session, exchange_id: int) -> list[dict[str, Any]]:
    """The register's records of one exchange, in chain order (for its detail)."""
    return [_register_row(r) for r in audit.export_rows(session, where=audit.RegisterFilter(exchange_id=exchange_id))]


# ----------------------------------------------------------------------------- register

#: The register's columns the page shows (the CSV has every export column).
REGISTER_COLUMNS = ("id", "recorded_at", "actor_type", "actor", "task_id", "action", "outcome", "protocol_id",
                    "municipality", "exchange_id", "subjects_count", "counts", "file_hashes", "message")


def _register_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in REGISTER_COLUMNS}


@dataclass
class Register:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def register(session: Session, where: audit.RegisterFilter, page: int = 1) -> Register:
    """One page of the processing register, newest first."""
    total = audit.count_rows(session, where)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    rows = audit.export_rows(session, where=where, newest_first=True, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return Register([_register_row(r) for r in rows], total, page, pages)
