"""The whole check of the audit trail: the chain in the database and the anchors outside it.

:func:`check` is what ``welfare-exchange audit verify``, the Exchanges view, the pruning and the
anchoring task rely on. It fails closed: the trail counts as intact only when the chain verifies
in itself (records, subject references, head, pruning facts) *and* the anchor store agrees with
it (every anchor authentic and matching, every anchoring the trail records present, every
pruning covered and vouched for). The report says what was checked and the first thing that broke.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from dataclasses import dataclass

from sqlalchemy.orm import Session

from welfare_exchange.audit import anchors, trail


@dataclass(frozen=True)
class IntegrityReport:
    """What was checked, and the first break (``reason``; ``broken_id`` when a record is named)."""

    chain: trail.VerifyResult
    anchors: anchors.AnchorCheck | None  # None when the chain broke first

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.anchors is not None and self.anchors.ok

    @property
    def reason(self) -> str | None:
        if not self.chain.ok:
            return self.chain.reason
        return self.anchors.mismatch if self.anchors is not None else None

    @property
    def broken_id(self) -> int | None:
        return self.chain.broken_id

    def checked_lines(self) -> list[str]:
        """What was checked, one line each (for the CLI)."""
        chain, out = self.chain, []
        span = f"records {chain.first_id}..{chain.last_id}" if chain.ok and chain.last_id else "up to the first break"
        out.append(f"records: {chain.checked} verified ({span}: hashes, order, chain head)")
        out.append(f"subject references: {chain.subjects_checked} verified against their records' digests")
        if chain.ok and chain.first_id > 1:
            out.append(f"pruning: records before {chain.first_id} pruned, {len(chain.prunings)} chained pruning fact(s)")
        a = self.anchors
        if a is None:
            out.append("anchors: not checked (the chain broke first)")
            return out
        out.append(
            f"anchors: {a.anchors} in {a.store} ({a.compared} compared with their record, {a.pruned} naming pruned records)"
        )
        out.append(f"time-stamps: {a.timestamps} RFC 3161 token(s) verified; signatures: {a.signatures} verified")
        out.append(f"anchorings recorded in the trail: {a.anchorings} matched to their anchor")
        if a.ok and a.prunings:
            out.append(f"prunings: {a.prunings} vouched for by anchors older than the legal term and covered by a later one")
        if a.ok and not a.anchors:
            out.append("note: no anchor yet — nothing outside the database vouches for these records until the anchoring runs")
        elif a.ok and a.since_latest:
            out.append(f"note: {a.since_latest} record(s) after the latest anchor are protected by the chain alone until the next anchoring")
        return out


def check(session: Session, path: pathlib.Path | None = None, *, anchoring_at: dt.datetime | None = None) -> IntegrityReport:
    """Verify the chain, then compare it with the anchor store (see the module docstring)."""
    chain = trail.verify(session)
    if not chain.ok:
        return IntegrityReport(chain, None)
    return IntegrityReport(chain, anchors.check_anchors(session, chain, path, anchoring_at=anchoring_at))
