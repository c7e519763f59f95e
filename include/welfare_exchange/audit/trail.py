"""Append, verify, export and prune the hash-chained audit trail."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange import insz as insz_lib
from welfare_exchange.db.models import (
    AuditAnchor,
    AuditHead,
    AuditPrunePermit,
    AuditRecord,
    AuditSubject,
    Protocol,
)
from welfare_exchange.runinfo import Actor
from welfare_exchange.settings import get_settings

GENESIS = "0" * 64
_ROWS_PER_INSERT = 400  # SQLite allows 32,766 parameters per statement

#: The fields covered by a record's hash, in the canonical encoding.
HASHED_FIELDS = (
    "id", "recorded_at", "actor_type", "actor", "dag_id", "run_id", "task_id", "try_number",
    "action", "outcome", "protocol_id", "legal_basis", "exchange_id", "data_categories",
    "file_hashes", "counts", "subject_ref", "subjects_count", "subjects_digest", "message",
    "fact_key", "prev_hash",
)


def _hmac_key() -> bytes:
    key = get_settings().audit_hmac_key
    if not key or len(key) < 32:
        raise RuntimeError(
            "WELFARE_EXCHANGE_AUDIT_HMAC_KEY is not set (or shorter than 32 characters): the audit "
            "trail cannot pseudonymise data subjects. `make install` generates one in var/secrets.env; "
            "in production it comes from the secrets backend."
        )
    return key.encode()


def subject_key(insz: str) -> bytes:
    """The keyed HMAC-SHA256 of an INSZ (32 bytes): the only way a person appears in the audit trail."""
    return hmac.digest(_hmac_key(), insz.encode("ascii"), "sha256")


def subject_ref(insz: str) -> str:
    """:func:`subject_key` as hex: how a record's single ``subject_ref`` column holds it."""
    return subject_key(insz).hex()


def subject_keys(numbers: Iterable[str]) -> list[bytes]:
    """:func:`subject_key` for many numbers, sorted and distinct (what ``audit_subject`` holds).

    An exchange has up to ~200,000 numbers. ``hmac.digest`` sets the key up again for every
    one; a keyed ``hmac`` object copied per number does that once (same bytes, ``tests/audit``
    checks them against ``hmac.digest``).
    """
    keyed = hmac.new(_hmac_key(), digestmod="sha256")

    def mac(number: str) -> bytes:
        copy = keyed.copy()
        copy.update(number.encode("ascii"))
        return copy.digest()

    return sorted({mac(n) for n in numbers})


def _digest(keys: list[bytes]) -> str:
    """SHA-256 over the sorted references in hex, one per line (the record's ``subjects_digest``)."""
    return hashlib.sha256("\n".join(map(bytes.hex, keys)).encode("ascii")).hexdigest()


def canonical_encoding(fields: dict[str, Any]) -> bytes:
    """The bytes a record's hash is computed over: sorted-key compact JSON of the hashed fields."""
    return json.dumps(
        {name: fields.get(name) for name in HASHED_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    ).encode("ascii")


def _hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_encoding(fields)).hexdigest()


def _fields(row: AuditRecord) -> dict[str, Any]:
    return {name: getattr(row, name) for name in HASHED_FIELDS}


def _refuse_personal_data(*texts: str | None) -> None:
    for text in texts:
        if text and insz_lib.find_insz_shaped(text):
            raise ValueError("an audit message may not contain an INSZ number; pass it as `subject`")


def fact_exists(session: Session, fact_key: str) -> bool:
    """Whether the fact with this ``fact_key`` is recorded."""
    return session.scalar(sa.select(AuditRecord.id).where(AuditRecord.fact_key == fact_key)) is not None


def record(
    session: Session,
    action: str,
    outcome: str = "success",
    *,
    actor: Actor,
    protocol: Protocol | None = None,
    protocol_id: int | None = None,
    legal_basis: str | None = None,
    exchange_id: int | None = None,
    data_categories: Iterable[str] | None = None,
    file_hashes: dict[str, str] | None = None,
    counts: dict[str, Any] | None = None,
    subject: str | None = None,
    subjects: Iterable[str] | None = None,
    subject_refs: Iterable[bytes] | None = None,
    message: str | None = None,
    fact_key: str | None = None,
) -> AuditRecord:
    """Append one fact to the trail, inside the caller's transaction.

    :param action: what happened, e.g. ``request.fetched``, ``result.delivered``.
    :param outcome: ``success``, ``failure``, ``refused``, ``duplicate``, ``skipped``, …
    :param protocol: the protocol the processing happens under (gives legal basis and id).
    :param subject: one INSZ the fact is about; stored only as its keyed HMAC.
    :param subjects: many INSZ numbers (an exchange's request); stored as keyed HMACs in
        ``audit_subject``, their digest covered by the record's hash.
    :param subject_refs: people already known only by their keyed reference (:func:`subject_key`,
        32 bytes) — a referral keeps no INSZ; stored beside (and like) ``subjects``.
    :param message: a human explanation — never personal data (checked).
    :param fact_key: makes the fact idempotent: when a record with this key exists, it is
        returned and nothing is written (a re-run task does not repeat a fact).
    """
    if fact_key is not None:
        existing = session.scalar(sa.select(AuditRecord).where(AuditRecord.fact_key == fact_key))
        if existing is not None:
            return existing
    _refuse_personal_data(message)
    refs = subject_keys(subjects) if subjects is not None else None
    if subject_refs is not None:
        given = set(subject_refs)
        if any(not isinstance(ref, bytes) or len(ref) != 32 for ref in given):
            raise ValueError("subject_refs must be 32-byte keyed references (audit.subject_key)")
        refs = sorted(given.union(refs or ()))

    # Taking the head row's lock first serialises appenders (row lock on PostgreSQL, the write
    # lock on SQLite), so two tasks never both chain onto the same predecessor.
    session.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_id=AuditHead.last_id))
    head = session.execute(sa.select(AuditHead).where(AuditHead.id == 1)).scalar_one()
    session.refresh(head)

    fields: dict[str, Any] = {
        "id": head.last_id + 1,
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
        "actor_type": actor.type,
        "actor": actor.name,
        "dag_id": actor.dag_id,
        "run_id": actor.run_id,
        "task_id": actor.task_id,
        "try_number": actor.try_number,
        "action": action,
        "outcome": outcome,
        "protocol_id": protocol.id if protocol is not None else protocol_id,
        "legal_basis": legal_basis or (protocol.legal_basis if protocol is not None else None),
        "exchange_id": exchange_id,
        "data_categories": sorted(data_categories) if data_categories is not None else None,
        "file_hashes": dict(file_hashes) if file_hashes else None,
        "counts": dict(counts) if counts else None,
        "subject_ref": subject_ref(subject) if subject is not None else None,
        "subjects_count": len(refs) if refs is not None else None,
        "subjects_digest": _digest(refs) if refs is not None else None,
        "message": message,
        "fact_key": fact_key,
        "prev_hash": head.last_hash,
    }
    row = AuditRecord(**fields, record_hash=_hash(fields))
    session.add(row)
    session.flush()
    if refs:
        _insert_subjects(session, row.id, refs)
    head.last_id = row.id
    head.last_hash = row.record_hash
    session.flush()
    return row


def _insert_subjects(session: Session, audit_id: int, refs: list[bytes]) -> None:
    """Bulk-insert a record's subject references (an exchange has up to ~200,000).

    Straight through the driver: the ORM's per-row parameter handling costs seconds here.
    """
    connection = session.connection()
    raw = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        buffer = io.StringIO("".join(f"\\\\x{ref.hex()}\t{audit_id}\n" for ref in refs))
        with raw.cursor() as cursor:
            cursor.copy_expert("COPY audit_subject (subject_ref, audit_id) FROM STDIN", buffer)
    elif connection.dialect.name == "sqlite":
        # Many rows per statement: half the cost of one executemany row each.
        step = _ROWS_PER_INSERT
        full = len(refs) - len(refs) % step
        many = f"INSERT INTO audit_subject (subject_ref, audit_id) VALUES {', '.join([f'(?, {int(audit_id)})'] * step)}"
        raw.executemany(many, (refs[i : i + step] for i in range(0, full, step)))
        raw.executemany(f"INSERT INTO audit_subject (subject_ref, audit_id) VALUES (?, {int(audit_id)})", ((r,) for r in refs[full:]))
    else:
        session.execute(sa.insert(AuditSubject), [{"audit_id": audit_id, "subject_ref": r} for r in refs])


_NO_SUBJECTS = (0, hashlib.sha256(b"").hexdigest())  # what a record without subject references holds: (0, _digest([]))


def _subject_digests(session: Session) -> dict[int, tuple[int, str]]:
    """Per record: how many subject references the table holds for it, and their digest.

    One pass over the table in key order ``(subject_ref, audit_id)``: each record's references
    arrive sorted, so its digest is fed as it goes — no per-record query, no sort.
    """
    running: dict[int, list] = {}
    query = sa.select(AuditSubject.audit_id, AuditSubject.subject_ref).order_by(
        AuditSubject.subject_ref, AuditSubject.audit_id
    )
    for audit_id, ref in session.execute(query.execution_options(yield_per=20_000)):
        # A value that is not 32 raw bytes was written behind the trail's back: it still hashes
        # (and so fails the comparison) instead of crashing the check.
        text = ref.hex() if isinstance(ref, bytes) else f"!{ref!r}"
        entry = running.get(audit_id)
        if entry is None:
            running[audit_id] = [hashlib.sha256(text.encode()), 1]
        else:
            entry[0].update(b"\n" + text.encode())
            entry[1] += 1
    return {audit_id: (count, digest.hexdigest()) for audit_id, (digest, count) in running.items()}


#: The chained fact pruning appends, and the one anchoring appends (see ``audit/anchors.py``).
PRUNED_ACTION = "audit.pruned"
ANCHORED_ACTION = "audit.anchored"


@dataclass(frozen=True)
class PruningFact:
    """A chained ``audit.pruned`` fact: which records went, and the hash carried over from them.

    ``anchor_sequence`` / ``anchor_digest`` name the anchor (kept outside the database) that
    proved the pruned records were past their legal term when they were pruned.
    """

    record_id: int
    from_id: int
    through_id: int
    carried_hash: str | None
    anchor_sequence: int | None
    anchor_digest: str | None


@dataclass(frozen=True)
class AnchoringFact:
    """A chained ``audit.anchored`` fact: anchor number ``sequence`` was written with ``digest``."""

    record_id: int
    sequence: int
    digest: str


@dataclass(frozen=True)
class PruneVoucher:
    """The anchor that proves records up to ``last_id`` are past their legal term."""

    sequence: int
    digest: str
    last_id: int


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, how many records were checked, and the first break.

    Also what the anchor check needs: where the chain starts and ends, the pruning and
    anchoring facts it holds, and how many subject references were checked.
    """

    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str | None = None
    first_id: int = 1
    last_id: int = 0
    last_hash: str = GENESIS
    subjects_checked: int = 0
    prunings: tuple[PruningFact, ...] = ()
    anchorings: tuple[AnchoringFact, ...] = ()


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pruning_fact(row: AuditRecord) -> PruningFact:
    counts, hashes = row.counts or {}, row.file_hashes or {}
    return PruningFact(
        record_id=row.id,
        from_id=_int_or_none(counts.get("from_id")) or 0,
        through_id=_int_or_none(counts.get("through_id")) or 0,
        carried_hash=hashes.get("carried_over_hash"),
        anchor_sequence=_int_or_none(counts.get("anchor_sequence")),
        anchor_digest=hashes.get("anchor_line"),
    )


def _anchoring_fact(row: AuditRecord) -> AnchoringFact | None:
    sequence, digest = _int_or_none((row.counts or {}).get("sequence")), (row.file_hashes or {}).get("anchor_line")
    return AnchoringFact(row.id, sequence, digest) if sequence and digest else None


def _start_problem(session: Session, first: AuditRecord | None, prunings: list[PruningFact]) -> str | None:
    """Why the trail may not start where it does, or ``None`` when a pruning fact vouches for it.

    The trail starts at record 1 on the genesis hash, or right after the records the latest
    chained ``audit.pruned`` fact removed, on the hash that fact carried over. The pruning
    markers (``audit_anchor`` rows) and prune permits are only cross-checked: a database user
    can write those, so they prove nothing and a forged one is named.
    """
    if session.scalar(sa.select(sa.func.count()).select_from(AuditPrunePermit)):
        return "a prune permit row is present outside a pruning transaction: deletions were let through the guard"
    previous = None
    for fact in prunings:
        expected_from = previous.through_id + 1 if previous else fact.from_id
        if not (1 <= fact.from_id == expected_from <= fact.through_id < fact.record_id) or not fact.carried_hash:
            return f"the pruning fact in record {fact.record_id} does not name a consistent range of pruned records"
        if fact.anchor_sequence is None or not fact.anchor_digest:
            return f"the pruning fact in record {fact.record_id} names no anchor that vouched for the pruning"
        previous = fact
    latest = prunings[-1] if prunings else None
    start = first.id if first is not None else 1
    if latest is not None and start <= latest.through_id:
        return f"the pruning fact in record {latest.record_id} says records ..{latest.through_id} were pruned, yet record {start} is still there"
    if start > 1 and (latest is None or latest.through_id != start - 1 or latest.carried_hash != first.prev_hash):
        gone = latest.through_id + 1 if latest is not None and latest.through_id < start - 1 else 1
        forged = session.scalar(sa.select(AuditAnchor.id).where(AuditAnchor.through_id == start - 1).limit(1))
        return (
            f"records {gone}..{start - 1} are missing: the trail starts at record {start} and no chained "
            f"{PRUNED_ACTION} fact vouches for that start"
            + (f"; pruning marker audit_anchor #{forged} is forged (no chained fact backs it)" if forged else "")
        )
    return _marker_problem(session, prunings)


def _marker_problem(session: Session, prunings: list[PruningFact]) -> str | None:
    """Every pruning marker row must follow the one before it and be backed by a chained fact,
    unless it lies before the oldest pruning fact still held (that fact was pruned in turn)."""
    backed = {(f.through_id, f.carried_hash) for f in prunings}
    oldest_from = prunings[0].from_id if prunings else None
    through = 0
    for marker in session.scalars(sa.select(AuditAnchor).order_by(AuditAnchor.id)):
        in_sequence = marker.through_id > through and marker.records_pruned == marker.through_id - through
        historic = oldest_from is not None and marker.through_id < oldest_from
        if not in_sequence or not ((marker.through_id, marker.head_hash) in backed or historic):
            return (
                f"pruning marker audit_anchor #{marker.id} (records ..{marker.through_id}) is forged: "
                f"no chained {PRUNED_ACTION} fact backs it"
            )
        through = marker.through_id
    return None


def verify(session: Session) -> VerifyResult:
    """Walk the chain from where it starts to its head and report the first break.

    Detects an edited record (its hash no longer matches), a removed or inserted record (the
    ids are no longer contiguous or the next ``prev_hash`` does not match), reordered records
    (ids are hashed), removed or edited subject references (their digest is hashed), records
    cut off the end (the head row no longer matches the last record), records cut off the
    start (no chained pruning fact vouches for the start) and forged pruning markers.

    This is the database's own evidence only; :func:`welfare_exchange.audit.integrity.check`
    adds the anchors kept outside the database (a chain rewritten whole, a pruning fact no
    anchor covers).
    """
    facts = session.scalars(
        sa.select(AuditRecord).where(AuditRecord.action.in_((PRUNED_ACTION, ANCHORED_ACTION))).order_by(AuditRecord.id)
    ).all()
    prunings = [_pruning_fact(r) for r in facts if r.action == PRUNED_ACTION]
    anchorings = tuple(a for a in (_anchoring_fact(r) for r in facts if r.action == ANCHORED_ACTION) if a)
    first = session.scalars(sa.select(AuditRecord).order_by(AuditRecord.id).limit(1)).first()
    problem = _start_problem(session, first, prunings)
    if problem:
        return VerifyResult(False, 0, 1, problem)
    expected_id = first.id if first is not None else 1
    expected_prev = GENESIS if expected_id == 1 else first.prev_hash
    start_id = expected_id
    checked = references = 0
    subjects = _subject_digests(session)
    rows = session.execute(sa.select(AuditRecord).order_by(AuditRecord.id).execution_options(yield_per=2000))
    for row in rows.scalars():
        if row.id != expected_id:
            what = "missing" if row.id > expected_id else "duplicated or out of order"
            return VerifyResult(False, checked, expected_id, f"record {expected_id} is {what}")
        if row.prev_hash != expected_prev:
            return VerifyResult(False, checked, row.id, f"record {row.id} does not chain onto its predecessor")
        if _hash(_fields(row)) != row.record_hash:
            return VerifyResult(False, checked, row.id, f"record {row.id} was altered (hash mismatch)")
        held = subjects.pop(row.id, _NO_SUBJECTS)
        if row.subjects_count is None and held[0]:
            return VerifyResult(False, checked, row.id, f"record {row.id}: subject references were added to it")
        if row.subjects_count is not None and held != (row.subjects_count, row.subjects_digest):
            what = (
                f"{row.subjects_count - held[0]} of its {row.subjects_count} subject references were removed"
                if held[0] < row.subjects_count else "its subject references were altered"
            )
            return VerifyResult(False, checked, row.id, f"record {row.id}: {what}")
        references += held[0]
        expected_prev = row.record_hash
        expected_id += 1
        checked += 1
    if subjects:  # references of a record that is not in the chain
        orphan = min(subjects)
        return VerifyResult(False, checked, orphan, f"subject references belong to record {orphan}, which is not in the chain")
    head = session.get(AuditHead, 1)
    last_id = expected_id - 1
    if head is None or head.last_id != last_id or head.last_hash != expected_prev:
        head_id = head.last_id if head else 0
        if last_id > head_id:
            return VerifyResult(False, checked, head_id + 1, f"record {head_id + 1} was added after the chain head")
        return VerifyResult(False, checked, head_id, f"record {head_id} was removed from the end of the chain")
    return VerifyResult(
        True, checked, first_id=start_id, last_id=last_id, last_hash=expected_prev, subjects_checked=references,
        prunings=tuple(prunings), anchorings=anchorings,
    )


EXPORT_COLUMNS = (
    "id", "recorded_at", "actor_type", "actor", "dag_id", "run_id", "task_id", "try_number",
    "action", "outcome", "protocol_id", "municipality", "nis_code", "legal_basis", "purpose",
    "exchange_id", "data_categories", "subjects_count", "subject_ref", "counts", "file_hashes",
    "message", "record_hash",
)


@dataclass(frozen=True)
class RegisterFilter:
    """Which records of the processing register to read (every field optional).

    :param since: from this day (UTC) on; ``until``: up to and including this day.
    :param action: an action (``result.delivered``), or a family ending in ``.`` (``request.``).
    """

    since: dt.date | None = None
    until: dt.date | None = None
    exchange_id: int | None = None
    protocol_id: int | None = None
    action: str | None = None

    def where(self, query):
        if self.since is not None:
            query = query.where(AuditRecord.recorded_at >= self.since.isoformat())
        if self.until is not None:
            query = query.where(AuditRecord.recorded_at < (self.until + dt.timedelta(days=1)).isoformat())
        if self.exchange_id is not None:
            query = query.where(AuditRecord.exchange_id == self.exchange_id)
        if self.protocol_id is not None:
            query = query.where(AuditRecord.protocol_id == self.protocol_id)
        if self.action:
            family = self.action.endswith(".")
            query = query.where(AuditRecord.action.startswith(self.action) if family else AuditRecord.action == self.action)
        return query


def export_rows(
    session: Session,
    since: dt.date | None = None,
    *,
    where: RegisterFilter | None = None,
    newest_first: bool = False,
    offset: int = 0,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """The processing-register view: one dict per record, protocol details joined in.

    Carries pseudonymous subject references only; the per-person references of an exchange
    stay in the database (they serve data-subject access requests, not the register).

    :param where: which records (``since`` is the same as ``where.since``).
    :param newest_first: the latest records first (the Exchanges view's register), else chain order.
    """
    where = where or RegisterFilter(since=since)
    query = where.where(
        sa.select(AuditRecord, Protocol.municipality, Protocol.nis_code, Protocol.purpose)
        .outerjoin(Protocol, Protocol.id == AuditRecord.protocol_id)
        .order_by(AuditRecord.id.desc() if newest_first else AuditRecord.id)
    )
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    for row, municipality, nis_code, purpose in session.execute(query.execution_options(yield_per=2000)):
        out = {name: getattr(row, name, None) for name in EXPORT_COLUMNS}
        out.update(municipality=municipality, nis_code=nis_code, purpose=purpose)
        yield out


def count_rows(session: Session, where: RegisterFilter) -> int:
    """How many records of the register ``where`` selects."""
    return int(session.scalar(where.where(sa.select(sa.func.count()).select_from(AuditRecord))) or 0)


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str]) -> None:
    """The register as CSV, the columns of :data:`EXPORT_COLUMNS`; lists and dicts as JSON."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})


def prune(session: Session, before: dt.datetime, *, actor: Actor, voucher: PruneVoucher) -> int:
    """Delete records older than ``before`` (their legal term is over), keeping the chain provable.

    Only records the ``voucher`` anchor covers go: an anchor authenticated outside the database
    and itself older than the legal term proves they were. The pruning is then appended to the
    chain as an ``audit.pruned`` fact naming the range, the hash carried over (from which
    :func:`verify` starts) and the voucher; the next anchor covers that fact. The
    ``audit_anchor`` row written beside it is an index, cross-checked by :func:`verify`.
    Returns how many records were removed.
    """
    cutoff = before.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    last = session.scalars(
        sa.select(AuditRecord)
        .where(AuditRecord.recorded_at < cutoff, AuditRecord.id <= voucher.last_id)
        .order_by(AuditRecord.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return 0
    through_id, carried = last.id, last.record_hash
    first_id = session.scalar(sa.select(sa.func.min(AuditRecord.id)))
    count = through_id - first_id + 1
    permit = AuditPrunePermit(through_id=through_id)
    session.add(permit)
    session.flush()
    session.execute(sa.delete(AuditSubject).where(AuditSubject.audit_id <= through_id))
    session.execute(sa.delete(AuditRecord).where(AuditRecord.id <= through_id))
    session.delete(permit)
    previous = session.scalar(sa.select(sa.func.max(AuditAnchor.through_id))) or 0
    session.add(
        AuditAnchor(
            through_id=through_id,
            head_hash=carried,
            pruned_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
            records_pruned=through_id - previous,
        )
    )
    session.flush()
    record(
        session,
        PRUNED_ACTION,
        actor=actor,
        counts={"records": count, "from_id": first_id, "through_id": through_id, "anchor_sequence": voucher.sequence},
        file_hashes={"carried_over_hash": carried, "anchor_line": voucher.digest},
        message=(
            f"audit records {first_id}..{through_id} recorded before {before.date().isoformat()} were pruned past their "
            f"legal term; anchor {voucher.sequence} vouched for their age; chain hash carried over"
        ),
    )
    return count
