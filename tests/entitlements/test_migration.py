"""Migration 0008: a store filled under the old schema becomes versions recorded at the migration,
is matched and explained as before, and survives a downgrade/upgrade round trip — SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command

from tests.entitlements.test_import import _rows, _write
from welfare_exchange import insz
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.engine import alembic_config, dispose_engines, upgrade
from welfare_exchange.entitlements import history, import_csv
from welfare_exchange.exchange import matching

REVISION = "0008"
BEFORE = f"{REVISION}-1"
UTC = dt.timezone.utc


def _fill_old_store(url: str, children: int = 40) -> list[str]:
    """Children, beneficiaries and entitlements as the pre-0008 schema holds them (no recorded columns)."""
    numbers = [insz.make(dt.date(2010, 1, 1) + dt.timedelta(days=i), 400) for i in range(children)]
    parent = insz.make(dt.date(1980, 1, 1), 400)
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("INSERT INTO beneficiary (insz) VALUES (:p)"), {"p": parent})
        conn.execute(sa.text("INSERT INTO child (insz, birth_date, nis_code) VALUES (:n, '2010-01-01', '11002')"),
                     [{"n": n} for n in numbers])
        ids = dict(conn.execute(sa.text("SELECT insz, id FROM child")).all())
        periods = [(ids[n], dt.date(2020, 1, 1), None if i % 2 else dt.date(2022, 6, 30)) for i, n in enumerate(numbers)]
        conn.execute(sa.text(
            "INSERT INTO entitlement (child_id, beneficiary_id, supplement, start_date, end_date) "
            "SELECT :c, id, 'sociale_toeslag', :s, :e FROM beneficiary"
        ), [{"c": c, "s": s, "e": e} for c, s, e in [*periods, (ids[numbers[0]], dt.date(2023, 1, 1), None)]])
    return numbers


def _downgrade(url: str) -> None:
    command.downgrade(alembic_config(url), BEFORE)
    dispose_engines()


@pytest.fixture
def old_store(store_db):
    _downgrade(store_db)
    numbers = _fill_old_store(store_db)
    return store_db, numbers


def test_existing_rows_become_versions_recorded_at_the_migration(old_store):
    url, numbers = old_store
    before = dt.datetime.now(UTC)
    upgrade(url)
    after = dt.datetime.now(UTC)
    dispose_engines()

    with session_scope() as session:
        rows = session.execute(sa.text("SELECT recorded_from, recorded_to FROM entitlement")).all()
        assert len(rows) == 41 and all(r.recorded_to is None for r in rows)
        start = history.history_start(session)
        assert before - dt.timedelta(seconds=1) <= start <= after
        assert history.as_known_on(session, before - dt.timedelta(seconds=5)) == []  # no invented knowledge
        assert len(history.as_known_on(session, after)) == 41
        # Matched as before the migration, now with true periods (child 1: two periods, a gap between).
        found = matching.match(session, numbers, supplements=["sociale_toeslag"], reference_date=dt.date(2020, 3, 1),
                               exchange_date=dt.date(2026, 11, 1), known_at=after)
        assert len(found) == 41
        assert [(r.period_start, r.period_end) for r in found if r.child_insz == numbers[0]] == [
            (dt.date(2020, 3, 1), dt.date(2022, 6, 30)), (dt.date(2023, 1, 1), None)]


def test_one_current_version_per_entitlement_is_enforced(old_store):
    url, _ = old_store
    upgrade(url)
    dispose_engines()
    insert = sa.text(
        "INSERT INTO entitlement (child_id, beneficiary_id, supplement, start_date, end_date, recorded_from, recorded_to) "
        "SELECT min(c.id), min(b.id), 'sociale_toeslag', :s, NULL, :f, :t FROM child c, beneficiary b"
    ).bindparams(sa.bindparam("f", type_=history.MOMENT), sa.bindparam("t", type_=history.MOMENT), sa.bindparam("s", type_=sa.Date))
    old = dt.datetime(2020, 1, 1, tzinfo=UTC)
    with get_engine(url).begin() as conn:  # a closed version of the same entitlement: history, allowed
        conn.execute(insert, {"s": dt.date(2020, 1, 1), "f": old, "t": old + dt.timedelta(days=1)})
    with pytest.raises(sa.exc.IntegrityError), get_engine(url).begin() as conn:
        conn.execute(insert, {"s": dt.date(2020, 1, 1), "f": old, "t": None})


def test_downgrade_keeps_the_current_versions_and_upgrade_again(old_store, tmp_path):
    url, numbers = old_store
    upgrade(url)
    dispose_engines()
    rows = _rows()
    import_csv(_write(tmp_path / "extract.csv", rows), delta=True)  # 5 entitlements more
    rows[0][6] = "2024-12-31"
    import_csv(_write(tmp_path / "corrected.csv", rows[:1]), delta=True)  # one superseded version
    dispose_engines()
    with get_engine(url).connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM entitlement")) == 47
    dispose_engines()

    _downgrade(url)
    with get_engine(url).connect() as conn:
        kept = conn.execute(sa.text("SELECT end_date FROM entitlement")).scalars().all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("entitlement")}
        unique = [u["column_names"] for u in sa.inspect(conn).get_unique_constraints("entitlement")]
    assert len(kept) == 46 and "recorded_from" not in columns
    assert unique == [["child_id", "beneficiary_id", "supplement", "start_date"]]
    dispose_engines()

    upgrade(url)
    dispose_engines()
    with session_scope() as session:
        assert len(history.as_known_on(session, dt.datetime.now(UTC))) == 46
