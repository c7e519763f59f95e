"""The retention run: delete everything whose deadline passed, and prove each deletion.

For every :class:`~welfare_exchange.db.models.RetentionItem` due on the run's date it deletes the
thing — a file on the municipality's SFTP account (``received/``, ``quarantine/``, ``outbox/``),
a request message in the agency's IMAP mailbox (S/MIME channel), a local staging folder or file, or a ledger payload in the project database — and records a
**deletion certificate** in the audit trail: what (kind and location), which SHA-256, when (the
record's timestamp and the run's date), under which rule.

Guarantees:

* **Keyed on the run's date** (``as_of``, the logical date of the DAG run), never the wall
  clock: a back-filled or re-run day deletes exactly what was due that day.
* **Idempotent.** A deleted item is marked in the ledger in the same transaction as its
  certificate, so it is never deleted or certified twice. A thing already gone when the run
  comes (the municipality removed its result after downloading it) is certified
  ``already_gone``. A ledger side effect is begun before each deletion, so a deletion whose
  run crashed before recording it is certified ``deleted`` (not "already gone") by the retry.
* **Never silently skipped.** When an SFTP server is unreachable its items stay due, the other
  municipalities' items are still deleted, and the run raises :class:`RetentionIncomplete` at
  the end, so the task fails and Airflow retries it with backoff.
* **The audit trail is kept for its legal term** (``WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS``) and
  pruned through :func:`welfare_exchange.audit.prune`, which carries the chain head over so
  ``audit verify`` still proves what remains.
"""

from __future__ import annotations

import datetime as dt
import logging
import pathlib
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import audit, insz, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Protocol, RetentionItem, SideEffect
from welfare_exchange.errors import WelfareExchangeError
from welfare_exchange.retention import rules
from welfare_exchange.settings import get_settings
from welfare_exchange.transport import sftp
from welfare_exchange.transport.mail import MailTransportError

log = logging.getLogger(__name__)

DELETED, ALREADY_GONE = "deleted", "already_gone"
RUNBOOK_STEP = "docs/retention.md § 'When a retention run fails'"


class RetentionIncomplete(WelfareExchangeError):
    """Some due items could not be deleted; they stay due and the run must be retried."""

    code = "retention_incomplete"


@dataclass(frozen=True)
class Certificate:
    """One deletion, as certified in the audit trail (no personal data: paths and hashes)."""

    item_id: int
    protocol_id: int
    exchange_id: int | None
    kind: str
    where: str
    location: str
    sha256: str | None
    rule: str
    deadline: dt.date
    outcome: str


@dataclass
class RunReport:
    """What a retention run did; :meth:`summary` (counts only) is what goes to XCom."""

    as_of: dt.date
    certificates: list[Certificate] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    still_due: int = 0
    swept: int = 0

    def summary(self) -> dict[str, Any]:
        outcomes = [c.outcome for c in self.certificates]
        return {
            "as_of": self.as_of.isoformat(),
            "deleted": outcomes.count(DELETED),
            "already_gone": outcomes.count(ALREADY_GONE),
            "failed": self.still_due,
            "interrupted_fetches_swept": self.swept,
        }


def _shown(text: str) -> str:
    """A location as the certificate shows it: file names come from municipalities, so an
    INSZ-shaped one (a number typed as a file name) is withheld."""
    return "[name withheld: it looked like an INSZ]" if insz.find_insz_shaped(text) else text


def split_sftp_location(location: str) -> tuple[str, str]:
    """``"<conn id>:<remote path>"`` → ``(conn id, remote path)``."""
    conn_id, sep, path = location.partition(":")
    if not sep or not conn_id or not path:
        raise ValueError(f"SFTP retention location must be '<connection id>:<remote path>', got {_shown(location)!r}")
    return conn_id, path


def due_items(
    session: Session, as_of: dt.date, *, exchange_id: int | None = None, kinds: tuple[str, ...] | None = None
) -> list[RetentionItem]:
    """Items not yet deleted whose deadline is on or before ``as_of``, oldest deadline first
    (only one exchange's, and only these kinds, when given)."""
    query = sa.select(RetentionItem).where(RetentionItem.deleted_at.is_(None), RetentionItem.deadline <= as_of)
    if exchange_id is not None:
        query = query.where(RetentionItem.exchange_id == exchange_id)
    if kinds is not None:
        query = query.where(RetentionItem.kind.in_(kinds))
    return list(session.scalars(query.order_by(RetentionItem.deadline, RetentionItem.id)))


# --------------------------------------------------------------------------- deleting one thing


def _delete_local(location: str) -> bool:
    """Delete a staging folder or file; False when already gone.

    Refuses anything outside the staging area: a retention item must never be able to make
    the worker delete an arbitrary path.
    """
    root = get_settings().staging_dir.resolve()
    path = pathlib.Path(location)
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise RetentionIncomplete(
            f"refused to delete {_shown(location)!r}: it lies outside the staging area {root} "
            "(WELFARE_EXCHANGE_STAGING_DIR changed?). Move the folder under the staging area or delete it by "
            "hand and mark the retention item, then re-run."
        )
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


#: A fetch streams the request into ``staging/protocol-<id>/incoming/`` and moves it into its
#: exchange's folder once the ledger knows the exchange. A copy still there after this long was
#: left by a fetch that crashed in between and whose run was never retried.
INCOMING_GRACE = dt.timedelta(hours=24)


def sweep_incoming(*, actor: audit.Actor) -> int:
    """Delete the partial requests interrupted fetches left in staging; returns how many.

    They are still encrypted (as the municipality sent them) and belong to no exchange, so no
    retention item ever covers them. Files younger than :data:`INCOMING_GRACE` may belong to a fetch that is
    running or about to be retried, and stay. One audit fact per protocol says how many went.
    """
    cutoff = dt.datetime.now(dt.timezone.utc).timestamp() - INCOMING_GRACE.total_seconds()
    total = 0
    for folder in sorted(get_settings().staging_dir.glob("protocol-*/incoming")):
        try:
            protocol_id = int(folder.parent.name.removeprefix("protocol-"))
        except ValueError:
            continue  # not a folder this system made
        stale = [path for path in folder.iterdir() if path.is_file() and path.stat().st_mtime < cutoff]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            total += len(stale)
            with session_scope() as session:
                audit.record(
                    session, "retention.swept", actor=actor, protocol_id=protocol_id, counts={"files": len(stale)},
                    message=f"{len(stale)} encrypted partial request file(s) left in staging by interrupted fetches "
                    f"(older than {INCOMING_GRACE.total_seconds() / 3600:g} h) deleted",
                )
    return total


def _clear_exchange_payload(session: Session, argument: str) -> bool:
    """Clear the request file name and remote paths the ledger holds for an exchange."""
    exchange = session.get(Exchange, int(argument))
    if exchange is None:
        return False
    changed = exchange.request_name is not None
    exchange.request_name = None
    for effect in session.scalars(sa.select(SideEffect).where(SideEffect.exchange_id == exchange.id)):
        if effect.detail is not None or effect.target is not None:
            effect.detail, effect.target, changed = None, None, True
    session.flush()
    return changed


#: ``where == "db"`` items: ``"<handler>:<argument>"`` → a function deleting inside the
#: run's transaction, returning False when there was nothing left to delete.
DB_HANDLERS: dict[str, Callable[[Session, str], bool]] = {"exchange": _clear_exchange_payload}


def _delete_db(session: Session, location: str) -> bool:
    name, _, argument = location.partition(":")
    handler = DB_HANDLERS.get(name)
    if handler is None:
        raise RetentionIncomplete(f"no database deletion handler for retention location {location!r}; known: {', '.join(DB_HANDLERS)}")
    return handler(session, argument)


# --------------------------------------------------------------------------- certificates


def _certify(session: Session, item: RetentionItem, outcome: str, as_of: dt.date, actor: audit.Actor, note: str = "") -> Certificate:
    """Mark the item deleted and record its certificate, in one transaction."""
    item.deleted_at = dt.datetime.now(dt.timezone.utc)
    item.deletion_outcome = outcome
    protocol = session.get(Protocol, item.protocol_id)
    shown = _shown(item.location)
    what = "deleted" if outcome == DELETED else "was already gone"
    audit.record(
        session, "retention.deleted", "success" if outcome == DELETED else ALREADY_GONE, actor=actor, protocol=protocol,
        exchange_id=item.exchange_id, file_hashes={item.kind: item.sha256} if item.sha256 else None,
        counts={"item": item.id, "deadline": item.deadline.isoformat(), "run_date": as_of.isoformat()},
        message=f"deletion certificate: {item.kind} ({item.where}) {shown} {what}{note}; rule: {item.rule}; "
        f"deadline {item.deadline.isoformat()}, retention run of {as_of.isoformat()}",
        fact_key=f"retention:{item.id}:deleted",
    )
    ledger.complete_side_effect(session, f"retention:{item.id}", sha256=item.sha256, detail={"outcome": outcome})
    return Certificate(item.id, item.protocol_id, item.exchange_id, item.kind, item.where, shown, item.sha256,
                       item.rule, item.deadline, outcome)


def _begin(item_id: int) -> tuple[RetentionItem | None, bool]:
    """Re-read the item and begin its deletion side effect; ``(item, an earlier try began it)``."""
    with session_scope() as session:
        item = session.get(RetentionItem, item_id)
        if item is None or item.deleted_at is not None:  # deleted by a concurrent run meanwhile
            return None, False
        key = f"retention:{item.id}"
        earlier = ledger.find_side_effect(session, key) is not None
        ledger.begin_side_effect(session, key, kind="retention_deleted", exchange_id=item.exchange_id)
        session.expunge(item)
        return item, earlier


def _finish(item_id: int, removed: bool, earlier: bool, as_of: dt.date, actor: audit.Actor) -> Certificate:
    if removed:
        outcome, note = DELETED, ""
    elif earlier:  # an earlier try deleted it and stopped before recording: it was still us
        outcome, note = DELETED, " (by an earlier try of the retention run that stopped before recording it)"
    else:
        outcome, note = ALREADY_GONE, ""
    with session_scope() as session:
        return _certify(session, session.get(RetentionItem, item_id), outcome, as_of, actor, note)


def delete_due(
    as_of: dt.date,
    *,
    actor: audit.Actor,
    hook_factory: Callable[[str], Any] = sftp.sftp_hook,
    raise_on_failure: bool = True,
    exchange_id: int | None = None,
    kinds: tuple[str, ...] | None = None,
) -> RunReport:
    """Delete every item due on ``as_of``, certify each, and fail loudly for what could not be done.

    :param as_of: the run's date (the DAG run's logical date).
    :param actor: who deletes (the Airflow task, or the operator from the CLI).
    :param hook_factory: builds the SFTP hook for a connection id (tests may pass options).
    :param raise_on_failure: raise :class:`RetentionIncomplete` when any item stays due.
    :param exchange_id: only this exchange's items (an exchange deleting its own request at once).
    :param kinds: only items of these kinds.
    """
    report = RunReport(as_of=as_of)
    if exchange_id is None:  # the daily run, not one exchange tidying up after itself
        report.swept = sweep_incoming(actor=actor)
    with session_scope() as session:
        items = [(i.id, i.where, i.location) for i in due_items(session, as_of, exchange_id=exchange_id, kinds=kinds)]
    by_connection: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for item_id, where, location in items:
        if where == "sftp":
            try:
                conn_id, path = split_sftp_location(location)
            except ValueError as err:
                report.failures.append(f"item {item_id}: {err}")
                continue
            by_connection[conn_id].append((item_id, path))
            continue
        try:
            item, earlier = _begin(item_id)
            if item is None:
                continue
            if where == "local":
                removed = _delete_local(item.location)
                report.certificates.append(_finish(item_id, removed, earlier, as_of, actor))
            elif where == "imap":
                from welfare_exchange.retention import imap

                removed = imap.delete_message(item.location)
                report.certificates.append(_finish(item_id, removed, earlier, as_of, actor))
            elif where == "db":
                with session_scope() as session:
                    removed = _delete_db(session, item.location)
                    cert = _certify(session, session.get(RetentionItem, item_id), DELETED if removed or earlier else ALREADY_GONE, as_of, actor)
                report.certificates.append(cert)
            else:
                raise RetentionIncomplete(f"unknown retention place {where!r} (sftp, imap, local or db)")
        except (RetentionIncomplete, MailTransportError, ValueError, OSError) as err:
            report.failures.append(f"item {item_id} ({where}): {_error_text(err)}")

    for conn_id, entries in sorted(by_connection.items()):
        hook = hook_factory(conn_id)
        for index, (item_id, path) in enumerate(entries):
            try:
                item, earlier = _begin(item_id)
                if item is None:
                    continue
                removed = sftp.delete(hook, path)
            except sftp.SftpTransportError as err:
                # The server is unreachable (or refuses): the rest of this account's items would
                # fail the same way; they all stay due and the run fails after the others.
                left = len(entries) - index
                report.failures.append(f"connection {conn_id!r}: {left} item(s) not deleted: {_error_text(err)}")
                break
            report.certificates.append(_finish(item_id, removed, earlier, as_of, actor))

    with session_scope() as session:
        report.still_due = len(due_items(session, as_of))
    summary = report.summary()
    log.info(
        "retention run of %s: %d deleted, %d already gone, %d still due",
        as_of.isoformat(), summary["deleted"], summary["already_gone"], report.still_due,
    )
    if report.failures and raise_on_failure:
        raise RetentionIncomplete(
            f"retention run of {as_of.isoformat()}: {report.still_due} item(s) could not be deleted and stay due "
            f"({summary['deleted']} deleted, {summary['already_gone']} already gone). "
            + " | ".join(report.failures[:10])
            + f". The task retries with backoff; runbook: {RUNBOOK_STEP}."
        )
    return report


def _error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return "[message withheld: it contained personal data]" if insz.find_insz_shaped(text) else text


# --------------------------------------------------------------------------- audit trail


def audit_cutoff(as_of: dt.date, days: int | None = None) -> dt.datetime:
    """Records before this moment are past their legal term on ``as_of``."""
    days = get_settings().audit_retention_days if days is None else days
    day = as_of - dt.timedelta(days=days)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def prune_audit(as_of: dt.date, *, actor: audit.Actor) -> dict[str, Any]:
    """Prune audit records past their legal term; ``audit verify`` still proves the rest.

    The trail is verified first, anchors included: a break inside the part to be pruned is
    evidence of tampering, and pruning would destroy it — so nothing is pruned and the task
    fails instead. Only records an anchor older than the legal term covers are pruned (that
    anchor vouches for their age); the next anchoring covers the pruning fact itself.
    """
    from welfare_exchange.audit import integrity

    cutoff = audit_cutoff(as_of)
    stamp = cutoff.isoformat(timespec="microseconds")
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope() as session:
        if session.scalar(sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.recorded_at < stamp)) == 0:
            return {"cutoff": cutoff.isoformat(), "records_pruned": 0}
        report = integrity.check(session, anchoring_at=now)
        if not report.ok:
            raise RetentionIncomplete(
                f"the audit trail does not verify ({report.reason}): nothing is pruned, so the evidence is kept. "
                "Run `welfare-exchange audit verify` and follow the runbook step 'The audit chain is broken'."
            )
        voucher = report.anchors.voucher(min(cutoff, now - dt.timedelta(days=get_settings().audit_retention_days)))
        if voucher is None:
            log.info("audit records before %s are past their term, but no anchor that old vouches for them yet", cutoff.date())
            return {"cutoff": cutoff.isoformat(), "records_pruned": 0, "waiting_for": "an anchor older than the legal term"}
        pruned = audit.prune(session, cutoff, actor=actor, voucher=voucher)
    log.info("audit records before %s pruned: %d (vouched for by anchor %d)", cutoff.date().isoformat(), pruned, voucher.sequence)
    return {"cutoff": cutoff.isoformat(), "records_pruned": pruned}


# --------------------------------------------------------------------------- the whole run


def anchor_audit(*, actor: audit.Actor) -> dict[str, Any]:
    """Verify the trail and anchor its head outside the database (:mod:`welfare_exchange.audit.anchors`)."""
    from welfare_exchange.audit import anchors

    return anchors.anchor_head(actor=actor)


def end_protocols(as_of: dt.date, *, actor: audit.Actor) -> dict[str, Any]:
    """Protocol end, in its own transaction (a task of the daily DAG)."""
    with session_scope() as session:
        return rules.end_protocols(session, as_of, actor=actor).as_dict()


def apply_rules(as_of: dt.date, *, actor: audit.Actor) -> dict[str, Any]:
    """The deadline rules, in their own transaction (a task of the daily DAG)."""
    with session_scope() as session:
        return rules.apply_rules(session, as_of, actor=actor).as_dict()


def run(as_of: dt.date, *, actor: audit.Actor, prune: bool = True, **kwargs: Any) -> dict[str, Any]:
    """A whole retention run, as the daily DAG does it (the CLI's ``retention run``)."""
    out: dict[str, Any] = {"protocol_end": end_protocols(as_of, actor=actor), "rules": apply_rules(as_of, actor=actor)}
    try:
        out["deletion"] = delete_due(as_of, actor=actor, **kwargs).summary()
    finally:
        if prune:  # the audit's own term does not wait for an SFTP server to come back
            out["audit"] = prune_audit(as_of, actor=actor)
        out["anchor"] = anchor_audit(actor=actor)
    return out
