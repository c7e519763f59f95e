"""Which structural protocols are open for a data interval (the feed steps and the deadline check)."""

from __future__ import annotations

import sqlalchemy as sa

from welfare_exchange.db.models import Protocol
from welfare_exchange.feeds.interval import FeedInterval
from welfare_exchange.protocols import GateDecision, check_gate

KIND = "structural"


def gate(protocol: Protocol, interval: FeedInterval) -> GateDecision:
    """The protocol's gate for ``interval``.

    The data is about the interval: the protocol must cover its last day, and be in force now
    (a protocol revoked or suspended since blocks even a back-fill of an old month).
    """
    return check_gate(protocol, interval.last_day, kind=KIND, channel=protocol.channel)


def open_protocols(session, interval: FeedInterval) -> list[Protocol]:
    """The structural protocols whose gate is open for ``interval``, by NIS code and id."""
    protocols = session.scalars(
        sa.select(Protocol).where(Protocol.kind == KIND, Protocol.status == "signed").order_by(Protocol.nis_code, Protocol.id)
    )
    return [p for p in protocols if gate(p, interval).is_open]
