"""The retention run: delete everything whose deadline passed, and prove each deletion.

For every :class:`~welfare_exchange.db.models.RetentionItem` due on the run's date it deletes the
thing — a file on the municipality's SFTP account (``received/``, ``quarantine/``, ``outbox/``),
a request message in the agency's IMAP mailbox (S/MIME channel), a local staging folder or file, an
exchange's staged files in the project database (staging back end ``postgres``), or a ledger payload in
the project database — and records a
**deletion certificate** in the audit trail: what was verified to be the recorded copy, which
SHA-256, when (the record's timestamp and the run's date), under which rule.

Guarantees:

* **Deleted means verified.** A copy is deleted only after it was identified as the recorded
  one: its content hashed and compared with the SHA-256 recorded when it was made (an SFTP
  file, a staged file — unsealed with the staging key —, a mailbox message wherever it was
  moved). The certificate says what matched, never a name a municipality chose (only its
  handle, :func:`welfare_exchange.untrusted.shown`).
* **Missing is not deleted.** A copy that cannot be found (or whose content no longer matches)
  is reported ``missing`` (``retention.missing`` in the audit), never certified; it is looked
  for again on every run for :data:`MISSING_LOOK_DAYS` days, then closed as missing. The
  runbook says what to do (*A copy to delete is missing*).
* **Keyed on the run's date** (``as_of``, the logical date of the DAG run), never the wall
  clock: a back-filled or re-run day deletes exactly what was due that day.
* **Idempotent.** A deleted item is marked in the ledger in the same transaction as its
  certificate, so it is never deleted or certified twice. What identified the copy is
  recorded in the ledger just before it is deleted, so a deletion whose run crashed before
  certifying it is certified by the retry with what that try verified.
* **Never silently skipped.** When an SFTP or IMAP server is unreachable its items stay due, the other
  municipalities' items are still deleted, and the run raises :class:`RetentionIncomplete` at
  the end, so the task fails and Airflow retries it with backoff.
* **The audit trail is kept for its legal term** (``WELFARE_EXCHANGE_AUDIT_RETENTION_DAYS``) and
  pruned through :func:`welfare_exchange.audit.prune`, which carries the chain head over so
  ``audit verify`` still proves what remains.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import pathlib
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from sqlalchemy.orm import Session

from welfare_exchange import audit, insz, ledger, untrusted
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Protocol, RetentionItem, SideEffect
from welfare_exchange.errors import WelfareExchangeError
from welfare_exchange.channels import registry as channels
from welfare_exchange.retention import rules
from welfare_exchange.settings import get_settings
from welfare_exchange.staging import DATABASE, delete_from_database, unseal
from welfare_exchange.transport.mail import MailTransportError

log = logging.getLogger(__name__)

DELETED, ALREADY_GONE, MISSING = "deleted", "already_gone", "missing"
RUNBOOK_STEP = "docs/retention.md § 'When a retention run fails'"
MISSING_STEP = "docs/RUNBOOK.md § 'A copy to delete is missing'"
#: How long a missing copy is looked for again (one look per daily run) before it is closed as missing.
MISSING_LOOK_DAYS = 7


class RetentionIncomplete(WelfareExchangeError):
    """Some due items could not be deleted; they stay due and the run must be retried."""

    code = "retention_incomplete"


@dataclass(frozen=True)
class Certificate:
    """One deletion, as certified in the audit trail (no personal data: handles and hashes).

    :param location: the copy's place as shown (a municipality's file name only as its handle).
    :param verified: what identified the copy as the recorded one.
    """

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
    verified: str = ""


@dataclass
class RunReport:
    """What a retention run did; :meth:`summary` (counts only) is what goes to XCom.

    ``still_due``: items due that could not be deleted (a server down); missing copies apart.
    """

    as_of: dt.date
    certificates: list[Certificate] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    still_due: int = 0
    swept: int = 0

    def summary(self) -> dict[str, Any]:
        outcomes = [c.outcome for c in self.certificates]
        return {
            "as_of": self.as_of.isoformat(),
            "deleted": outcomes.count(DELETED),
            "already_gone": outcomes.count(ALREADY_GONE),
            "missing": len(self.missing),
            "failed": self.still_due,
            "interrupted_fetches_swept": self.swept,
        }


def shown_location(item: RetentionItem) -> str:
    """Where an item's copy is, as certificates, logs and ``retention status`` show it.

    Locations are kept in the database to find the copy; a municipality may have named the
    file, so its name appears only as a handle. Staging paths are the agency's own.
    """
    channel = channels.for_place(item.where)
    if channel is not None:
        return channel.shown_location(item.location)
    if item.where == "local":
        path = pathlib.Path(item.location)
        root = get_settings().staging_dir
        return str(path.relative_to(root)) if path.is_relative_to(root) else untrusted.shown_path(item.location)
    return item.location


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


def _staged_path(item: RetentionItem) -> pathlib.Path:
    """The item's local path, refused unless it lies inside the staging area: a retention item
    must never be able to make the worker delete an arbitrary path."""
    root = get_settings().staging_dir.resolve()
    path = pathlib.Path(item.location)
    resolved = path.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise RetentionIncomplete(
            f"refused to delete item {item.id} ({shown_location(item)}): it lies outside the staging area {root} "
            "(WELFARE_EXCHANGE_STAGING_DIR changed?). Move the folder under the staging area or delete it by "
            "hand and mark the retention item, then re-run."
        )
    return path


def _staged_identity(path: pathlib.Path, sha256: str | None) -> str | None:
    """What identifies a staged file as the recorded copy, or ``None`` when it is not it.

    A request is staged sealed with the staging key: it is unsealed in memory and the request's
    SHA-256 compared. A file staged without a recorded digest is the agency's own file, named by
    its exchange: its path in the staging area is its identity.
    """
    data = path.read_bytes()
    if sha256 is None:
        return f"{len(data)} bytes, identified by its path in the staging area (no digest was recorded)"
    if hashlib.sha256(data).hexdigest() == sha256:
        return f"{len(data)} bytes, SHA-256 {sha256} matched"
    try:
        plain = unseal(data)
    except (InvalidToken, RuntimeError):
        return None
    if hashlib.sha256(plain).hexdigest() == sha256:
        return f"sealed with the staging key; unsealed, {len(plain)} bytes, SHA-256 {sha256} matched"
    return None


def _delete_local(item: RetentionItem, before_delete: Callable[[str], None]) -> str | None:
    """Delete a staging folder or staged file once identified; what was verified, or ``None``."""
    path = _staged_path(item)
    where = shown_location(item)
    if path.is_dir() and not path.is_symlink():
        files = sum(1 for p in path.rglob("*") if p.is_file())
        verified = f"staging folder {where} of exchange {item.exchange_id} ({files} file(s))"
        before_delete(verified)
        shutil.rmtree(path)
        return verified
    if not path.is_file():
        return None
    identity = _staged_identity(path, item.sha256)
    if identity is None:
        return None
    verified = f"staged file {where}, {identity}"
    before_delete(verified)
    path.unlink()
    return verified


def _delete_staged_blobs(item: RetentionItem, before_delete: Callable[[str], None]) -> str | None:
    """Delete an exchange's staged files (or one) kept in the project database, once identified."""
    return delete_from_database(item.location, item.sha256, before_delete)


#: A fetch used to stream the request into ``staging/protocol-<id>/incoming/`` before moving it
#: into its exchange's folder; requests are now sealed straight into the exchange's folder. A
#: copy still there after this long was left by such a fetch that crashed in between.
INCOMING_GRACE = dt.timedelta(hours=24)


def sweep_incoming(*, actor: audit.Actor) -> int:
    """Delete the partial requests interrupted fetches left in staging; returns how many.

    They belong to no exchange, so no retention item ever covers them. Files younger than
    :data:`INCOMING_GRACE` may belong to a fetch that is running or about to be retried, and
    stay. One audit fact per protocol says how many went.
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
                    message=f"{len(stale)} partial request file(s) left in staging by interrupted fetches "
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


def _certify(session: Session, item: RetentionItem, outcome: str, as_of: dt.date, actor: audit.Actor, verified: str) -> Certificate:
    """Mark the item deleted and record its certificate, in one transaction."""
    item.deleted_at = dt.datetime.now(dt.timezone.utc)
    item.deletion_outcome = outcome
    protocol = session.get(Protocol, item.protocol_id)
    what = "deleted" if outcome == DELETED else "was already gone"
    audit.record(
        session, "retention.deleted", "success" if outcome == DELETED else ALREADY_GONE, actor=actor, protocol=protocol,
        exchange_id=item.exchange_id, file_hashes={item.kind: item.sha256} if item.sha256 else None,
        counts={"item": item.id, "deadline": item.deadline.isoformat(), "run_date": as_of.isoformat()},
        message=f"deletion certificate: {item.kind} ({item.where}) {verified}, {what}; rule: {item.rule}; "
        f"deadline {item.deadline.isoformat()}, retention run of {as_of.isoformat()}",
        fact_key=f"retention:{item.id}:deleted",
    )
    ledger.complete_side_effect(session, f"retention:{item.id}", sha256=item.sha256, detail={"outcome": outcome, "verified": verified})
    return Certificate(item.id, item.protocol_id, item.exchange_id, item.kind, item.where, shown_location(item), item.sha256,
                       item.rule, item.deadline, outcome, verified)


def _begin(item_id: int) -> tuple[RetentionItem | None, str | None]:
    """Re-read the item and begin its deletion side effect; ``(item, what an earlier try verified
    just before deleting it)``."""
    with session_scope() as session:
        item = session.get(RetentionItem, item_id)
        if item is None or item.deleted_at is not None:  # deleted by a concurrent run meanwhile
            return None, None
        effect = ledger.begin_side_effect(session, f"retention:{item.id}", kind="retention_deleted", exchange_id=item.exchange_id)
        session.expunge(item)
        return item, (effect.detail or {}).get("verified")


def _recorder(item_id: int) -> Callable[[str], None]:
    """Records, before the deletion, what identified the copy (read back by a retry)."""

    def record(verified: str) -> None:
        with session_scope() as session:
            effect = ledger.find_side_effect(session, f"retention:{item_id}")
            effect.detail = {"verified": verified}

    return record


def _finish(item_id: int, verified: str | None, earlier: str | None, as_of: dt.date, actor: audit.Actor) -> Certificate | None:
    """Certify a verified deletion; report the copy missing when nothing was verified."""
    if verified is None and earlier is not None:  # an earlier try verified it, deleted it and stopped
        verified = f"{earlier} (deleted by an earlier try of the retention run that stopped before certifying it)"
    with session_scope() as session:
        item = session.get(RetentionItem, item_id)
        if verified is not None:
            return _certify(session, item, DELETED, as_of, actor, verified)
        _report_missing(session, item, as_of, actor)
        return None


def _report_missing(session: Session, item: RetentionItem, as_of: dt.date, actor: audit.Actor) -> None:
    """Audit a copy that was not found (once when first missed, once when closed); never certified."""
    first = item.missing_since is None
    if first:
        item.missing_since = as_of
    closing = (as_of - item.missing_since).days >= MISSING_LOOK_DAYS
    why = ("no digest was recorded for it, so it cannot be identified"
           if item.sha256 is None and channels.for_place(item.where) is not None
           else "no copy with the recorded content was found")
    if closing:
        item.deleted_at = dt.datetime.now(dt.timezone.utc)
        item.deletion_outcome = MISSING
        ledger.complete_side_effect(session, f"retention:{item.id}", sha256=item.sha256, detail={"outcome": MISSING})
    if first or closing:
        then = ("closed as missing: no longer looked for" if closing
                else f"looked for again on each run for {MISSING_LOOK_DAYS} days")
        audit.record(
            session, "retention.missing", MISSING, actor=actor, protocol=session.get(Protocol, item.protocol_id),
            exchange_id=item.exchange_id, file_hashes={item.kind: item.sha256} if item.sha256 else None,
            counts={"item": item.id, "deadline": item.deadline.isoformat(), "run_date": as_of.isoformat()},
            message=f"not deleted, not certified: {item.kind} ({item.where}) at {shown_location(item)}: {why}; "
            f"{then}; missing since {item.missing_since.isoformat()}. Runbook: {MISSING_STEP}",
            fact_key=f"retention:{item.id}:missing" + (":closed" if closing else ""),
        )
    log.warning("retention item %s (%s at %s) is missing: %s; not certified", item.id, item.kind, shown_location(item), why)


def _delete_one(item_id: int, delete: Callable[[RetentionItem, Callable[[str], None]], str | None], as_of: dt.date,
                actor: audit.Actor, report: RunReport) -> None:
    """Begin, locate-verify-delete, certify (or report missing) one item."""
    item, earlier = _begin(item_id)
    if item is None:
        return
    certificate = _finish(item_id, delete(item, _recorder(item_id)), earlier, as_of, actor)
    if certificate is None:
        report.missing.append(item_id)
    else:
        report.certificates.append(certificate)


def delete_due(
    as_of: dt.date,
    *,
    actor: audit.Actor,
    hook_factory: Callable[[str], Any] | None = None,
    raise_on_failure: bool = True,
    exchange_id: int | None = None,
    kinds: tuple[str, ...] | None = None,
) -> RunReport:
    """Delete every item due on ``as_of``, certify each, and fail loudly for what could not be done.

    :param as_of: the run's date (the DAG run's logical date).
    :param actor: who deletes (the Airflow task, or the operator from the CLI).
    :param hook_factory: builds the SFTP hook for a connection id (tests may pass options); handed
        to every channel's :meth:`~welfare_exchange.channels.base.Channel.deleter`.
    :param raise_on_failure: raise :class:`RetentionIncomplete` when any item stays due (a
        missing copy does not: no retry finds it sooner; it is audited and flagged instead).
    :param exchange_id: only this exchange's items (an exchange deleting its own request at once).
    :param kinds: only items of these kinds.
    """
    report = RunReport(as_of=as_of)
    if exchange_id is None:  # the daily run, not one exchange tidying up after itself
        report.swept = sweep_incoming(actor=actor)
    with session_scope() as session:
        items = [(i.id, i.where, i.location) for i in due_items(session, as_of, exchange_id=exchange_id, kinds=kinds)]
    # A staged file before the staging folder that holds it: each is identified and certified on its own.
    items.sort(key=lambda entry: -len(pathlib.Path(entry[2]).parts) if entry[1] in ("local", DATABASE) else 0)
    # A channel's copies, per store (an SFTP account, a mailbox): a store that cannot be reached
    # stops its own items only.
    by_store: dict[tuple[str, str], list[int]] = defaultdict(list)
    for item_id, where, location in items:
        channel = channels.for_place(where)
        if channel is not None:
            try:
                by_store[(channel.name, channel.store_of(location))].append(item_id)
            except ValueError as err:
                report.failures.append(f"item {item_id}: {err}")
            continue
        try:
            if where == "local":
                _delete_one(item_id, _delete_local, as_of, actor, report)
            elif where == DATABASE:
                _delete_one(item_id, _delete_staged_blobs, as_of, actor, report)
            elif where == "db":
                item, earlier = _begin(item_id)
                if item is None:
                    continue
                with session_scope() as session:
                    removed = _delete_db(session, item.location)
                    cert = _certify(session, session.get(RetentionItem, item_id), DELETED if removed or earlier else ALREADY_GONE,
                                    as_of, actor, f"ledger payload {item.location}")
                report.certificates.append(cert)
            else:
                raise RetentionIncomplete(f"unknown retention place {where!r} ({', '.join(_places())})")
        except (RetentionIncomplete, ValueError, OSError) as err:
            report.failures.append(f"item {item_id} ({where}): {_error_text(err)}")

    options = {} if hook_factory is None else {"hook_factory": hook_factory}
    for (name, store), entries in sorted(by_store.items()):
        channel = channels.channel_for(name)
        delete_copy = channel.deleter(store, **options)
        for index, item_id in enumerate(entries):
            try:
                _delete_one(item_id, delete_copy, as_of, actor, report)
            except channel.unreachable as err:
                # The store is unreachable (or refuses): the rest of its items would fail the
                # same way; they all stay due and the run fails after the others.
                left = len(entries) - index
                report.failures.append(f"connection {store!r}: {left} item(s) not deleted: {_error_text(err)}")
                break
            except (RetentionIncomplete, MailTransportError, ValueError, OSError) as err:
                report.failures.append(f"item {item_id} ({name}): {_error_text(err)}")

    with session_scope() as session:
        report.still_due = sum(1 for i in due_items(session, as_of) if i.missing_since is None)
    summary = report.summary()
    log.info(
        "retention run of %s: %d deleted, %d already gone, %d missing, %d still due",
        as_of.isoformat(), summary["deleted"], summary["already_gone"], summary["missing"], report.still_due,
    )
    if report.failures and raise_on_failure:
        raise RetentionIncomplete(
            f"retention run of {as_of.isoformat()}: {summary['failed']} item(s) could not be deleted and stay due "
            f"({summary['deleted']} deleted, {summary['missing']} missing). "
            + " | ".join(report.failures[:10])
            + f". The task retries with backoff; runbook: {RUNBOOK_STEP}."
        )
    return report


def _places() -> list[str]:
    return [place for name in channels.names() for place in channels.channel_for(name).places] + ["local", DATABASE, "db"]


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
