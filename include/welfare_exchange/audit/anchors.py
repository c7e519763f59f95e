"""Anchors: the chain's head, authenticated and written down outside the project database.

The hash chain shows any edit, insertion, deletion or reordering — unless someone with write
access to the project database rewrites the chain from the edited record on, or cuts its oldest
records and forges the fact that would explain the cut. What such a person cannot produce is an
anchor: the chain's head hash, time-stamped by a time-stamping authority (RFC 3161) and/or
signed with the agency's anchor key (Ed25519) — neither key is in the database (see
:mod:`welfare_exchange.audit.authentication`).

Each day ``retention_daily`` (task ``anchor_audit_head``) verifies the trail, appends one line to
the anchor store (``WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE``; in production on storage the
database's users cannot write: WORM bucket, log shipper) and then records a chained
``audit.anchored`` fact carrying the line's SHA-256. So the trail itself says that anchoring
happened: a missing, emptied, shortened or edited store no longer agrees with it.

A line (canonical JSON: sorted keys, no spaces): ``seq`` (1, 2, …), ``prev`` (the SHA-256 of the
line before), ``anchored_at``, ``last_id`` and ``last_hash`` (the head), ``tsr`` (the time-stamp
response, base64 DER, over ``last_hash``) and ``sig`` (Ed25519 over the line without ``sig``).
Ids and hashes only: no personal data.

:func:`check_anchors` compares the store with the chain: every line chained, authenticated as
``WELFARE_EXCHANGE_AUDIT_ANCHOR_AUTH`` requires, matching the record it names; every anchoring
the trail records present; every pruning covered by a later anchor and vouched for by an anchor
older than the legal term.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.audit import authentication as auth
from welfare_exchange.audit.trail import (
    ANCHORED_ACTION,
    GENESIS,
    HASHED_FIELDS,
    Actor,
    PruneVoucher,
    VerifyResult,
    canonical_encoding,
    record,
    verify,
)
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.settings import get_settings

log = logging.getLogger(__name__)

RUNBOOK_STEP = "docs/RUNBOOK.md, 'The audit chain is broken'"
_FIELDS = {"seq": int, "prev": str, "anchored_at": str, "last_id": int, "last_hash": str}


def anchor_file() -> pathlib.Path:
    """The anchor store (``WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE``, default ``var/audit-anchors.jsonl``)."""
    return get_settings().audit_anchor_file


def _canonical(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class AnchorLine:
    """One line of the anchor store, as read."""

    number: int  # line number in the file
    raw: str
    fields: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.raw.encode("ascii")).hexdigest()

    @property
    def seq(self) -> int:
        return self.fields["seq"]

    @property
    def last_id(self) -> int:
        return self.fields["last_id"]

    @property
    def last_hash(self) -> str:
        return self.fields["last_hash"]

    def signed_payload(self) -> bytes:
        return _canonical({k: v for k, v in self.fields.items() if k != "sig"}).encode("ascii")


class AnchorStoreError(ValueError):
    """A line of the store is not an anchor (the message names it)."""


def read_store(path: pathlib.Path) -> list[AnchorLine]:
    """Every anchor of the store, in order; a missing file is an empty store."""
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as err:
        raise AnchorStoreError(f"the anchor store {path} holds bytes that no anchor has (edited)") from err
    lines = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw:
            continue
        try:
            fields = json.loads(raw)
            ok = isinstance(fields, dict) and all(isinstance(fields.get(k), t) for k, t in _FIELDS.items())
        except ValueError:
            ok = False
        if not ok:
            raise AnchorStoreError(f"line {number} of the anchor store {path} is not an anchor (edited or forged)")
        lines.append(AnchorLine(number, raw, fields))
    return lines


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class CheckedAnchor:
    """An anchor found authentic: what it covers and when (the TSA's time, else the signed one)."""

    seq: int
    digest: str
    last_id: int
    at: dt.datetime


@dataclass(frozen=True)
class AnchorCheck:
    """How the anchor store compares with the chain (what was checked, and the first break)."""

    store: pathlib.Path
    anchors: int = 0  # lines in the store
    compared: int = 0  # compared with a record still in the trail
    pruned: int = 0  # naming records pruned since (their lines are still authenticated)
    timestamps: int = 0  # RFC 3161 tokens verified
    signatures: int = 0  # Ed25519 signatures verified
    anchorings: int = 0  # audit.anchored facts of the trail matched to their line
    prunings: int = 0  # audit.pruned facts vouched for and covered
    since_latest: int = 0  # records after the latest anchor's head (protected by the chain alone so far)
    mismatch: str | None = None
    checked: tuple[CheckedAnchor, ...] = ()

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def voucher(self, not_after: dt.datetime) -> PruneVoucher | None:
        """The latest anchor made no later than ``not_after``: it proves its records that old."""
        old = [a for a in self.checked if a.at <= not_after]
        return PruneVoucher(old[-1].seq, old[-1].digest, old[-1].last_id) if old else None


class _Broken(Exception):
    pass


def _authenticate(line: AnchorLine, required: frozenset[str], tsa_certs, public_key) -> tuple[dt.datetime, set[str]]:
    """Check the line's time-stamp and signature; returns its time and what was verified."""
    done: set[str] = set()
    when = None
    names = {"timestamp": "RFC 3161 time-stamp", "signature": "signature"}
    for method, field in (("timestamp", "tsr"), ("signature", "sig")):
        value = line.fields.get(field)
        if value is None:
            if method in required:
                raise _Broken(f"anchor {line.seq} (line {line.number}) carries no {names[method]}: forged, or written without one")
            continue
        material = tsa_certs if method == "timestamp" else public_key
        if material is None:
            if method in required:
                raise _Broken(f"anchor {line.seq}: its {names[method]} cannot be checked, the verification key is not configured")
            continue
        try:
            if method == "timestamp":
                when = auth.check_timestamp(value, line.last_hash, material)
            else:
                auth.check_signature(line.signed_payload(), value, material)
        except auth.InvalidAuthentication as err:
            raise _Broken(f"anchor {line.seq} (line {line.number}) is not authentic: {err}") from err
        done.add(method)
    if when is None:
        try:
            when = dt.datetime.fromisoformat(line.fields["anchored_at"]).astimezone(dt.timezone.utc)
        except ValueError as err:
            raise _Broken(f"anchor {line.seq} (line {line.number}) has no readable time") from err
    return when, done


def _verification_material(required: frozenset[str]) -> tuple[Any, Any]:
    """The trusted TSA certificates and the anchor public key (``None``: neither required nor configured)."""

    def load(method: str, configured, loader, what: str):
        if method not in required and not configured():
            return None
        try:
            return loader()
        except auth.AnchorAuthError as err:
            if method in required:
                raise _Broken(f"{what} cannot be checked: {err}") from err
            return None

    return (
        load("timestamp", auth.timestamp_configured, auth.trusted_tsa_certificates, "time-stamps"),
        load("signature", auth.signing_configured, auth.public_key, "signatures"),
    )


def check_anchors(
    session: Session, chain: VerifyResult, path: pathlib.Path | None = None, *, anchoring_at: dt.datetime | None = None
) -> AnchorCheck:
    """Compare the anchor store with a chain that verified in itself (``chain.ok``).

    :param anchoring_at: set by the anchoring task (and pruning): a pruning no anchor covers yet
        is then accepted when it would pass at that time — the anchor about to be written covers it.
    """
    store = path or anchor_file()
    counts: dict[str, Any] = {"store": store}
    try:
        _check(session, chain, store, anchoring_at, counts)
    except (_Broken, AnchorStoreError) as err:
        counts["mismatch"] = str(err)
    return AnchorCheck(**counts)


def _check(session: Session, chain: VerifyResult, store: pathlib.Path, anchoring_at, counts: dict[str, Any]) -> None:
    settings = get_settings()
    lines = read_store(store)
    counts["anchors"] = len(lines)
    facts = {fact.sequence: fact for fact in chain.anchorings}
    if not lines:
        state = "missing" if not store.exists() else "empty"
        if facts:
            latest = max(facts.values(), key=lambda f: f.sequence)
            raise _Broken(
                f"the anchor store {store} is {state}, but the trail records {len(facts)} anchoring(s), "
                f"the latest (anchor {latest.sequence}) in record {latest.record_id}"
            )
        if chain.prunings:
            raise _Broken(f"the anchor store {store} is {state}, but the trail was pruned: no anchor vouches for its start")
        counts["since_latest"] = chain.last_id
        return
    required = settings.audit_anchor_auth
    certs, key = _verification_material(required)
    named = sorted({line.last_id for line in lines if chain.first_id <= line.last_id <= chain.last_id})
    held = dict(session.execute(sa.select(AuditRecord.id, AuditRecord.record_hash).where(AuditRecord.id.in_(named))).all())
    checked: list[CheckedAnchor] = []
    prev = GENESIS
    for index, line in enumerate(lines, 1):
        if line.seq != index:
            raise _Broken(f"line {line.number} of the anchor store holds anchor {line.seq} where anchor {index} belongs: anchors were removed or reordered")
        if line.fields["prev"] != prev:
            raise _Broken(f"anchor {line.seq} does not chain onto anchor {index - 1}: the anchor store was edited")
        when, done = _authenticate(line, required, certs, key)
        counts["timestamps"] = counts.get("timestamps", 0) + ("timestamp" in done)
        counts["signatures"] = counts.get("signatures", 0) + ("signature" in done)
        if line.last_id > chain.last_id:
            raise _Broken(
                f"anchor {line.seq} names record {line.last_id}, beyond the chain's head (record {chain.last_id}): records were removed"
            )
        if line.last_id >= chain.first_id:
            if held.get(line.last_id) != line.last_hash:
                raise _Broken(
                    f"record {line.last_id} no longer has the hash anchored in anchor {line.seq} ({line.fields['anchored_at']}): "
                    "the trail was rewritten from that record on or before"
                )
            counts["compared"] = counts.get("compared", 0) + 1
        else:
            counts["pruned"] = counts.get("pruned", 0) + 1
        fact = facts.get(line.seq)
        if fact is not None:
            if fact.digest != line.digest:
                raise _Broken(f"anchor {line.seq} differs from the digest recorded for it in record {fact.record_id}: the anchor line was edited")
            counts["anchorings"] = counts.get("anchorings", 0) + 1
        elif line.last_id >= chain.first_id and index < len(lines):
            # Its fact follows its head, so it is still in the trail; only the latest anchor's
            # fact may be missing (the anchoring stopped between the two writes: it is recorded late).
            raise _Broken(
                f"the trail holds no {ANCHORED_ACTION} fact for anchor {line.seq} (after record {line.last_id}): "
                "records were removed from the trail"
            )
        checked.append(CheckedAnchor(line.seq, line.digest, line.last_id, when))
        prev = line.digest
    beyond = sorted(s for s in facts if s > len(lines))
    if beyond:
        fact = facts[beyond[-1]]
        raise _Broken(
            f"the anchor store ends at anchor {len(lines)}, but the trail records anchor {fact.sequence} (record {fact.record_id}): "
            "the anchor store was shortened"
        )
    counts["checked"] = tuple(checked)
    counts["since_latest"] = chain.last_id - lines[-1].last_id
    counts["prunings"] = _check_prunings(chain, checked, anchoring_at, settings.audit_retention_days)


def _check_prunings(chain: VerifyResult, checked: list[CheckedAnchor], anchoring_at, term_days: int) -> int:
    """Every pruning fact: covered by a later anchor, vouched for by one older than the legal term."""
    term = dt.timedelta(days=term_days)
    for fact in chain.prunings:
        voucher = checked[fact.anchor_sequence - 1] if 0 < fact.anchor_sequence <= len(checked) else None
        if voucher is None or voucher.digest != fact.anchor_digest:
            raise _Broken(f"the pruning in record {fact.record_id} names anchor {fact.anchor_sequence} as its voucher, which the anchor store does not hold")
        if voucher.last_id < fact.through_id:
            raise _Broken(
                f"the pruning in record {fact.record_id} removed records up to {fact.through_id}, beyond those its voucher "
                f"anchor {voucher.seq} covered (up to {voucher.last_id})"
            )
        cover = next((a for a in checked if a.last_id >= fact.record_id), None)
        if cover is None and anchoring_at is None:
            raise _Broken(
                f"the pruning in record {fact.record_id} (records {fact.from_id}..{fact.through_id}) is not covered by any anchor: "
                "nothing outside the database vouches for where the trail now starts. If a pruning just ran, run the "
                "anchoring (task anchor_audit_head, or `welfare-exchange audit anchor`); otherwise records were cut"
            )
        at = cover.at if cover is not None else anchoring_at
        if voucher.at > at - term:
            raise _Broken(
                f"the pruning in record {fact.record_id} removed records anchored on {voucher.at:%Y-%m-%d} (anchor {voucher.seq}), "
                f"within the legal term of {term_days} days before {at:%Y-%m-%d}: records were cut, not pruned"
            )
    return len(chain.prunings)


# --------------------------------------------------------------------------- anchoring


class AnchoringRefused(RuntimeError):
    """The trail does not verify: no anchor is written over it (that would vouch for tampering)."""


@contextlib.contextmanager
def _locked(store: pathlib.Path) -> Iterator[None]:
    """One anchoring at a time: two would both take the same sequence number. The lock file lives
    in the runtime folder, not beside the store (WORM storage takes appends, not lock files)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "audit-anchoring.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _methods() -> list[str]:
    """Required methods, and any other one configured (it is applied and checked too)."""
    required = get_settings().audit_anchor_auth
    out = []
    if "timestamp" in required or get_settings().audit_tsa_url:
        out.append("timestamp")
    if "signature" in required or get_settings().audit_signing_key:
        out.append("signature")
    return out


def anchor_head(*, actor: Actor, path: pathlib.Path | None = None) -> dict[str, Any]:
    """Verify the trail, append its head to the anchor store (authenticated), record that in the trail.

    Raises :class:`AnchoringRefused` when the trail does not verify, and
    :class:`~welfare_exchange.audit.authentication.AnchorAuthError` when the TSA or the key is
    unavailable: the task fails and retries; no unauthenticated anchor is ever written.
    """
    store = path or anchor_file()
    with _locked(store):
        for attempt in (1, 2):
            with session_scope() as session:
                # The whole check (welfare_exchange.audit.integrity.check): the chain, then the anchors.
                chain = verify(session)
                checked = check_anchors(session, chain, store, anchoring_at=dt.datetime.now(dt.timezone.utc)) if chain.ok else None
                if checked is None or not checked.ok:
                    reason = chain.reason if checked is None else checked.mismatch
                    raise AnchoringRefused(
                        f"the audit trail does not verify ({reason}): no anchor is written over it. Runbook: {RUNBOOK_STEP}."
                    )
                lines = read_store(store)
                if attempt == 1 and _record_late(session, chain, lines, actor):
                    continue  # verify again, the late fact included
                if chain.last_id == 0:
                    return {"sequence": None, "reason": "the audit trail is empty"}
                head = session.get(AuditRecord, chain.last_id)
                encoding = canonical_encoding({name: getattr(head, name) for name in HASHED_FIELDS})
            break
        fields: dict[str, Any] = {
            "seq": len(lines) + 1,
            "prev": lines[-1].digest if lines else GENESIS,
            "anchored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "last_id": chain.last_id,
            "last_hash": chain.last_hash,
        }
        methods = _methods()
        if "timestamp" in methods:
            fields["tsr"] = base64.b64encode(auth.request_timestamp(encoding)).decode("ascii")
        if "signature" in methods:
            fields["sig"] = auth.sign(_canonical(fields).encode("ascii"))
        line = AnchorLine(len(lines) + 1, _canonical(fields), fields)
        _append(store, line.raw)
        log.info("audit anchor %d appended to %s (a second copy, ids and hashes only): %s", line.seq, store, line.raw)
        with session_scope() as session:
            _record_anchoring(
                session, line, actor,
                f"chain head (record {line.last_id}) anchored outside the project database as anchor {line.seq} "
                f"of {store.name}, authenticated by {' and '.join(methods)}",
            )
    return {"sequence": line.seq, "last_id": line.last_id, "last_hash": line.last_hash, "digest": line.digest, "methods": methods}


def _record_anchoring(session: Session, line: AnchorLine, actor: Actor, message: str) -> None:
    record(
        session, ANCHORED_ACTION, actor=actor,
        counts={"sequence": line.seq, "head_id": line.last_id},
        file_hashes={"anchor_line": line.digest},
        message=message,
        fact_key=f"{ANCHORED_ACTION}:{line.digest}",
    )


def _record_late(session: Session, chain: VerifyResult, lines: list[AnchorLine], actor: Actor) -> bool:
    """The latest anchor's fact, when an earlier anchoring stopped before recording it."""
    latest = lines[-1] if lines else None
    if latest is None or latest.last_id < chain.first_id or any(f.sequence == latest.seq for f in chain.anchorings):
        return False
    _record_anchoring(
        session, latest, actor,
        f"anchor {latest.seq} (chain head record {latest.last_id}) recorded late: the anchoring that wrote it "
        "stopped before recording it",
    )
    return True


def _append(store: pathlib.Path, raw: str) -> None:
    with open(store, "a", encoding="ascii") as handle:
        handle.write(raw + "\n")
        handle.flush()
        os.fsync(handle.fileno())
