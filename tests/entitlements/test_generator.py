"""The synthetic data generator: deterministic, Groeipakket-shaped, bulk-loaded — SQLite and PostgreSQL.

Assertions compare counts and digests only: no INSZ number may appear in test output.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib

import pytest
import sqlalchemy as sa

from welfare_exchange import insz
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange import municipalities
from welfare_exchange.entitlements import generator, sample_children
from welfare_exchange.entitlements.generator import REFERENCE_DATE, STORE_DATE, generate
from welfare_exchange.errors import InputError


def _digest(url: str) -> str:
    """SHA-256 over every row of the store, in id order, in a database-neutral text form."""
    digest = hashlib.sha256()
    with get_engine(url).connect() as conn:
        for table, columns in (
            ("child", "id, insz, birth_date, nis_code"),
            ("beneficiary", "id, insz, email, address_line, postcode, city"),
            ("entitlement", "id, child_id, beneficiary_id, supplement, start_date, end_date, recorded_from, recorded_to"),
        ):
            for row in conn.execute(sa.text(f"SELECT {columns} FROM {table} ORDER BY id")):  # noqa: S608
                digest.update(("|".join(_text(v) for v in row) + "\n").encode())
    return digest.hexdigest()


def test_same_seed_same_rows_other_seed_other_rows(store_db):
    first = generate(5000, 7, url=store_db, progress=False)
    digest = _digest(store_db)
    again = generate(5000, 7, url=store_db, progress=False)
    assert _digest(store_db) == digest
    assert {k: v for k, v in first.items() if k != "seconds"} == {k: v for k, v in again.items() if k != "seconds"}
    generate(5000, 8, url=store_db, progress=False)
    assert _digest(store_db) != digest


def test_identical_on_sqlite_and_postgresql_digest_is_known(store_db):
    """The rows depend only on the seed, not on the database: one digest for both backends."""
    generate(2000, 3, url=store_db, progress=False)
    expected = _reference_digest()
    assert _digest(store_db) == expected


def _text(value) -> str:
    """A value in one text form on both databases (recorded moments as UTC, without offset)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
        return value.isoformat(" ", "microseconds")
    return str(value)  # SQLite keeps moments as that very text


_REFERENCE: dict[str, str] = {}


def _reference_digest() -> str:
    """Digest of the seed-3, 2000-child store generated into a private SQLite database."""
    if "d" not in _REFERENCE:
        import tempfile

        from welfare_exchange.db import upgrade

        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/reference.db"
            upgrade(url)
            generate(2000, 3, url=url, progress=False)
            _REFERENCE["d"] = _digest(url)
            get_engine(url).dispose()
    return _REFERENCE["d"]


def test_generation_replaces_the_store(store_db):
    generate(3000, 1, url=store_db, progress=False)
    generate(1000, 2, url=store_db, progress=False)
    with session_scope(store_db) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM child")) == 1000
        assert session.scalar(sa.text("SELECT max(id) FROM child")) == 1000


def test_a_store_of_50000_children_looks_like_the_groeipakket(store_db):
    counts = generate(50_000, 1, url=store_db, progress=False)
    engine = get_engine(store_db)
    with engine.connect() as conn:
        children = conn.execute(sa.text("SELECT id, insz, birth_date, nis_code FROM child")).all()
        beneficiaries = conn.execute(sa.text("SELECT id, insz, email, address_line, postcode, city FROM beneficiary")).all()
        versions = conn.execute(
            sa.text("SELECT child_id, beneficiary_id, supplement, start_date, end_date, recorded_from, recorded_to FROM entitlement")
        ).all()
        entitlements = [v for v in versions if v.recorded_to is None]
        orphans = conn.scalar(sa.text(
            "SELECT count(*) FROM entitlement e LEFT JOIN child c ON c.id = e.child_id "
            "LEFT JOIN beneficiary b ON b.id = e.beneficiary_id WHERE c.id IS NULL OR b.id IS NULL"
        ))
    assert len(children) == counts["children"] == 50_000
    assert len(beneficiaries) == counts["beneficiaries"]
    assert len(entitlements) == counts["entitlements"] and len(versions) == counts["entitlement_versions"]
    assert orphans == 0

    # Every number valid, unique, and carrying the stored birth date.
    numbers = [c.insz for c in children] + [b.insz for b in beneficiaries]
    # (Counts are computed before asserting, so a failure never shows a number.)
    invalid = sum(not insz.is_valid(n) for n in numbers)
    duplicates = len(numbers) - len(set(numbers))
    assert invalid == 0
    assert duplicates == 0
    births = [dt.date.fromisoformat(str(c.birth_date)) for c in children]
    assert sum(insz.birth_date(c.insz) != born for c, born in zip(children, births)) == 0
    assert min(births) >= dt.date(1999, 1, 1) and max(births) <= STORE_DATE
    assert {b.year for b in births} >= set(range(1999, 2027))
    bis = sum(insz.kind(c.insz) == "bis" for c in children)
    assert 0.02 < bis / len(children) < 0.04
    ben_years = [insz.birth_date(b.insz).year for b in beneficiaries]
    assert min(ben_years) >= 1960 and max(ben_years) <= 2000

    # Children spread over the municipalities by weight.
    nis = collections.Counter(c.nis_code for c in children)
    assert set(nis) <= {m.nis_code for m in municipalities.MUNICIPALITIES}
    assert len(nis) > 250
    assert 0.08 < nis["11002"] / len(children) < 0.10

    # ~31 % with a sociale toeslag; starts before and after the reference date; ended and ongoing.
    by_supplement = collections.defaultdict(list)
    for e in entitlements:
        by_supplement[e.supplement].append(e)
    assert set(by_supplement) == {"sociale_toeslag", "zorgtoeslag", "schooltoeslag"}
    sociale_children = {e.child_id for e in by_supplement["sociale_toeslag"]}
    assert 0.29 < len(sociale_children) / len(children) < 0.33
    assert counts["sociale_toeslag_children"] == len(sociale_children)
    for rows in by_supplement.values():
        starts = [dt.date.fromisoformat(str(e.start_date)) for e in rows]
        assert any(s < REFERENCE_DATE for s in starts) and any(s >= REFERENCE_DATE for s in starts)
        assert any(e.end_date is None for e in rows) and any(e.end_date is not None for e in rows)
    for e in entitlements:
        start = dt.date.fromisoformat(str(e.start_date))
        assert dt.date(2019, 1, 1) <= start <= STORE_DATE
        assert e.end_date is None or start <= dt.date.fromisoformat(str(e.end_date)) <= STORE_DATE

    # Beneficiaries changing: the sociale toeslag ends with one and continues the next day with another.
    periods = collections.defaultdict(list)
    for e in by_supplement["sociale_toeslag"]:
        periods[e.child_id].append(e)
    changes = 0
    for rows in periods.values():
        if len(rows) == 2:
            first, second = sorted(rows, key=lambda e: str(e.start_date))
            assert first.beneficiary_id != second.beneficiary_id
            assert dt.date.fromisoformat(str(first.end_date)) + dt.timedelta(days=1) == dt.date.fromisoformat(
                str(second.start_date)
            )
            changes += 1
    assert changes == counts["beneficiary_changes"] > 100

    _assert_history(versions, counts)

    # Beneficiaries with several children (~1.77 per family), some living apart.
    per_beneficiary = collections.defaultdict(set)
    for e in entitlements:
        per_beneficiary[e.beneficiary_id].add(e.child_id)
    assert max(len(kids) for kids in per_beneficiary.values()) >= 4
    assert 1.6 < counts["children"] / counts["families"] < 1.95
    domicile = {c.id: c.nis_code for c in children}
    apart = sum(len({domicile[k] for k in kids}) > 1 for kids in per_beneficiary.values())
    assert apart > 100

    # ~70 % reachable by e-mail on synthetic domains only; the others by a postal address.
    with_email = [b for b in beneficiaries if b.email]
    assert 0.66 < len(with_email) / len(beneficiaries) < 0.74
    assert all(b.email.endswith(("@example.org", ".invalid")) for b in with_email)
    without = [b for b in beneficiaries if not b.email]
    assert all(b.address_line and b.postcode and b.city for b in without)


def _assert_history(versions, counts) -> None:
    """Bitemporal: each version recorded after its period started and never after the store date;
    per entitlement the versions follow each other without overlap, the last one current unless
    withdrawn; some recorded months late (retroactively), some corrected, some withdrawn."""
    def moment(v):
        return dt.datetime.fromisoformat(str(v)[:19]) if v is not None else None

    last = dt.datetime.combine(STORE_DATE, dt.time(1))
    by_key = collections.defaultdict(list)
    late = 0
    for v in versions:
        start, recorded, closed = dt.date.fromisoformat(str(v.start_date)), moment(v.recorded_from), moment(v.recorded_to)
        assert start <= recorded.date() and recorded <= last and (closed is None or recorded < closed <= last)
        late += (recorded.date() - start).days > 30
        by_key[(v.child_id, v.beneficiary_id, v.supplement, str(v.start_date))].append((recorded, closed))
    withdrawn = 0
    for spans in by_key.values():
        spans.sort()
        for (_, closed), (following, _) in zip(spans, spans[1:]):
            assert closed == following  # a superseded version ends where the next begins
        withdrawn += spans[-1][1] is not None
    assert late > 0.05 * len(by_key)
    assert withdrawn == counts["withdrawn"] + counts["corrected_beneficiaries"] > 50
    assert len(versions) > len(by_key) * 1.2  # ended periods were recorded ongoing first


def test_indexes_and_constraints_are_back_after_the_load(store_db):
    inspector_before = sa.inspect(get_engine(store_db))
    before = {t: _schema(inspector_before, t) for t in ("child", "beneficiary", "entitlement")}
    generate(1000, 1, url=store_db, progress=False)
    get_engine(store_db).dispose()
    inspector = sa.inspect(get_engine(store_db))
    assert {t: _schema(inspector, t) for t in ("child", "beneficiary", "entitlement")} == before
    assert "ix_entitlement_child_supplement" in before["entitlement"]["indexes"]


def _schema(inspector, table: str) -> dict:
    return {
        "indexes": sorted(i["name"] for i in inspector.get_indexes(table)),
        "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        "foreign_keys": sorted(tuple(f["constrained_columns"]) for f in inspector.get_foreign_keys(table)),
    }


def test_import_after_generate_gets_fresh_ids(store_db, tmp_path):
    """After a bulk load with explicit ids, ordinary inserts (the import) must not collide."""
    from welfare_exchange.entitlements import import_csv

    generate(1000, 1, url=store_db, progress=False)
    path = tmp_path / "extra.csv"
    child = insz.make(dt.date(2024, 5, 6), 997)
    parent = insz.make(dt.date(1990, 1, 2), 997)
    path.write_text(
        "child_insz,child_birth_date,child_nis,beneficiary_insz,supplement,start_date,end_date\n"
        f"{child},2024-05-06,11002,{parent},sociale_toeslag,2024-06-01,\n"
    )
    counts = import_csv(path, url=store_db, delta=True)
    assert counts["children_new"] == 1 and counts["entitlements_new"] == 1


def test_generation_is_audited_with_counts_only(store_db):
    counts = generate(1500, 4, url=store_db, progress=False)
    with get_engine(store_db).connect() as conn:
        row = conn.execute(
            sa.text("SELECT outcome, counts, message, subject_ref FROM audit_record WHERE action = 'entitlements.generated' ORDER BY id DESC")
        ).first()
    assert row.outcome == "success" and row.subject_ref is None
    recorded = row.counts if isinstance(row.counts, dict) else __import__("json").loads(row.counts)
    assert recorded["children"] == 1500 == counts["children"]
    leaked = len(insz.find_insz_shaped(str(recorded) + (row.message or "")))
    assert leaked == 0


def test_a_failed_load_leaves_the_previous_store(store_db, monkeypatch):
    generate(1000, 1, url=store_db, progress=False)
    digest = _digest(store_db)

    real_family = generator._Generator.family
    calls = []

    def breaks_halfway(self, chunk, budget):
        # Fails after several chunks were already written into the new store.
        calls.append(1)
        if len(calls) > 600:
            raise RuntimeError("generator broke")
        return real_family(self, chunk, budget)

    monkeypatch.setattr(generator._Generator, "family", breaks_halfway)
    with pytest.raises(RuntimeError, match="generator broke"):
        generate(2000, 2, url=store_db, progress=False, chunk_size=200)
    assert _digest(store_db) == digest


def test_numbers_are_those_of_insz_make_and_never_collide():
    gen = generator._Generator(10, 1, 10)
    day = dt.date(2003, 4, 5)
    assert gen.number(day.toordinal(), False) == insz.make(day, 1)
    assert gen.number(day.toordinal(), True) == insz.make(day, 1, bis=True)
    assert gen.number(day.toordinal(), False) == insz.make(day, 2)
    # A day whose 998 serials are used moves on to the next day.
    gen.serials[day.toordinal()] = 998
    assert gen.number(day.toordinal(), False) == insz.make(day + dt.timedelta(days=1), 1)


def test_sample_children_is_deterministic_and_local(store_db):
    generate(5000, 1, url=store_db, progress=False)
    with session_scope(store_db) as session:
        first = sample_children(session, "44021", 50, 9)
        again = sample_children(session, "44021", 50, 9)
        other = sample_children(session, "44021", 50, 10)
        everyone = sample_children(session, "73109", 10_000, 1)  # Voeren: a small municipality
        local = set(session.scalars(sa.text("SELECT insz FROM child WHERE nis_code = '44021'")).all())
    # Booleans and counts only, so that a failure never shows a number.
    same, different, elsewhere = first == again, first != other, len(set(first) - local)
    assert len(first) == 50 and same and different
    assert elsewhere == 0
    assert len(everyone) < 10_000


@pytest.mark.parametrize("children, seed", [(0, 1), (generator.MAX_CHILDREN + 1, 1), (10, -1)])
def test_bad_arguments_are_input_errors(children, seed):
    with pytest.raises(InputError):
        generate(children, seed, progress=False)


def test_cli_prints_one_summary_line_without_numbers(store_db, capsys):
    assert main(["entitlements", "generate", "--children", "1200", "--seed", "5", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and out.out.startswith("generated 1200 children in ")
    leaked = len(insz.find_insz_shaped(out.out + out.err))
    assert leaked == 0
    assert main(["entitlements", "generate", "--children", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("welfare-exchange: error: --children must be between")
