"""A signed referral agreement with families referred and their list delivered (as the delivery step does)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.referral.builders import RUN, SYSTEM, TODAY, USER, Family, candidate_csv, family, password, referral_protocol
from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Referral
from welfare_exchange.protocols import get
from welfare_exchange.referral import candidates, listing

SENT_AT = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.timezone.utc)


@dataclass
class Referred:
    protocol_id: int
    key: str
    families: list[Family]
    codes: list[str]  # in the order of ``families``
    list_exchange: int

    def protocol(self, session):
        return get(session, self.protocol_id)


def refer(families: list[Family], *, on: dt.date = RUN, sent_at: dt.datetime = SENT_AT, key: str | None = None,
          protocol_id: int | None = None) -> Referred:
    """Import the families, build the list and record its delivery; the referral ids per family."""
    key = key or password()
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv(families), today=TODAY, actor=USER)
        protocol_id = protocol_id or referral_protocol(session).id
    with session_scope() as session:
        built = listing.build_referral_list(session, get(session, protocol_id), on, password=key, actor=SYSTEM)
    with session_scope() as session:
        ledger.begin_side_effect(session, listing.delivery_key(built.exchange_id), kind=listing.DELIVERY_KIND,
                                 exchange_id=built.exchange_id)
        ledger.complete_side_effect(session, listing.delivery_key(built.exchange_id))
        listing.mark_sent(session, built.exchange_id, at=sent_at, actor=SYSTEM)
    with session_scope() as session:
        by_ref = {bytes(r.family_ref): r.code for r in session.scalars(sa.select(Referral).where(Referral.exchange_id == built.exchange_id))}
    return Referred(protocol_id, key, families, [by_ref.get(audit.subject_key(f.child)) for f in families], built.exchange_id)


@pytest.fixture
def referred(project_db) -> Referred:
    """Twelve families referred on :data:`RUN` under one signed agreement."""
    return refer([family() for _ in range(12)])
