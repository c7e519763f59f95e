"""Method 2 reads the store's knowledge: a withdrawn or superseded version selects no family,
and a selection as known at an earlier moment is that moment's — SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from welfare_exchange import insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Beneficiary, Child, Entitlement
from welfare_exchange.outreach.selection import select_families

UTC = dt.timezone.utc
REFERENCE = dt.date(2026, 9, 1)
T1, T2 = dt.datetime(2026, 8, 1, tzinfo=UTC), dt.datetime(2026, 9, 15, tzinfo=UTC)


def test_withdrawn_and_superseded_versions_select_nobody(project_db):
    with session_scope() as session:
        parents = [Beneficiary(insz=insz.make(dt.date(1981, 1, 1) + dt.timedelta(days=i), 600)) for i in range(3)]
        kids = [Child(insz=insz.make(dt.date(2014, 1, 1) + dt.timedelta(days=i), 600), birth_date=dt.date(2014, 1, 1) + dt.timedelta(days=i),
                      nis_code="99801") for i in range(3)]
        session.add_all(parents + kids)
        session.flush()

        def version(i, start, end, recorded_from, recorded_to=None):
            session.add(Entitlement(child_id=kids[i].id, beneficiary_id=parents[i].id, supplement="sociale_toeslag",
                                    start_date=start, end_date=end, recorded_from=recorded_from, recorded_to=recorded_to))

        version(0, dt.date(2025, 1, 1), None, T1)  # entitled: selected
        version(1, dt.date(2025, 1, 1), None, T1, T2)  # withdrawn at T2: selected only as known before T2
        version(2, dt.date(2025, 1, 1), None, T1, T2)  # ended retroactively before the reference date at T2
        version(2, dt.date(2025, 1, 1), dt.date(2026, 6, 30), T2)
        session.flush()
        ids = [p.id for p in parents]

        def chosen(**kwargs):
            return [f.beneficiary_id for f in select_families(
                session, nis_code="99801", reference_date=REFERENCE, supplements=["sociale_toeslag"], **kwargs)]

        assert chosen() == [ids[0]]
        assert chosen(known_at=T2) == [ids[0]]
        assert chosen(known_at=T2 - dt.timedelta(seconds=1)) == ids
        assert chosen(known_at=T1 - dt.timedelta(seconds=1)) == []
