"""Anchors: the chain's head, written down outside the project database every day.

The hash chain shows any edit, insertion, deletion or reordering — unless someone with write
access to the project database rewrites the *whole* chain from the edited record on, head row
included: then every hash is consistent again. What such a person cannot rewrite is a copy of
an earlier head kept elsewhere. ``retention_daily`` appends one line a day to the anchor file
(``WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE``, default ``var/audit-anchors.jsonl``) and logs it in its
task log; ``welfare-exchange audit verify`` checks every anchor whose record still exists
against the chain. In production the file belongs on storage the database's users cannot write
(a WORM bucket, a log shipper, the SIEM); the line in the task log is a second copy.

A line: ``{"anchored_at": "...", "last_id": 1234, "last_hash": "..."}`` — ids and hashes only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.db.models import AuditHead, AuditRecord
from welfare_exchange.settings import get_settings


def anchor_file() -> pathlib.Path:
    default = get_settings().home / "audit-anchors.jsonl"
    return pathlib.Path(os.environ.get("WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE") or default)


def write_anchor(session: Session, path: pathlib.Path | None = None) -> dict:
    """Append the chain's current head to the anchor file; returns the line written."""
    head = session.get(AuditHead, 1)
    line = {
        "anchored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "last_id": head.last_id if head else 0,
        "last_hash": head.last_hash if head else None,
    }
    target = path or anchor_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="ascii") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return line


@dataclass(frozen=True)
class AnchorCheck:
    """How the chain compares with the anchors kept outside the database."""

    checked: int  # anchors whose record is still in the trail
    pruned: int  # anchors older than the trail's pruning (their records are gone, as the law wants)
    mismatch: str | None = None  # the first anchor the chain contradicts, said plainly

    @property
    def ok(self) -> bool:
        return self.mismatch is None


def check_anchors(session: Session, path: pathlib.Path | None = None) -> AnchorCheck:
    """Compare every anchor with the record it names; the first contradiction is reported."""
    target = path or anchor_file()
    if not target.exists():
        return AnchorCheck(0, 0)
    checked = pruned = 0
    head = session.get(AuditHead, 1)
    first_id = session.scalar(sa.select(sa.func.min(AuditRecord.id)))
    for number, raw in enumerate(target.read_text(encoding="ascii").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            anchor = json.loads(raw)
            last_id, last_hash = int(anchor["last_id"]), anchor["last_hash"]
        except (ValueError, KeyError, TypeError):
            return AnchorCheck(checked, pruned, f"line {number} of {target} is not an anchor")
        if last_id == 0:
            continue  # anchored before the first record
        if head is None or last_id > head.last_id:
            return AnchorCheck(checked, pruned, f"anchor on line {number} names record {last_id}, beyond the chain's head: records were removed")
        if first_id is None or last_id < first_id:
            pruned += 1
            continue
        stored = session.scalar(sa.select(AuditRecord.record_hash).where(AuditRecord.id == last_id))
        if stored != last_hash:
            return AnchorCheck(
                checked, pruned,
                f"record {last_id} no longer has the hash anchored on line {number} ({anchor.get('anchored_at')}): "
                "the trail was rewritten from that record on or before",
            )
        checked += 1
    return AnchorCheck(checked, pruned)
